// The shim's libraries kept out of the snapshot (SHIM_LIBS in node-agent/isolate/shim-bundle.ts):
// the host hands over a library's module function at its first use, and it is evaluated
// here, in this isolate, under the worker's own budgets.
import { host } from '../host.js';

const ErrorCtor = Error;
const noRequire = (name) => { throw new ErrorCtor(`a shim library asked for ${String(name)}, which it does not get here`); };

/** The library's module.exports; `require` answers its external requires (none by default). */
export function loadLib(name, require = noRequire, dirname = '') {
  const run = host.lib(name);
  const module = { exports: {} };
  run(module, module.exports, require, dirname);
  return module.exports;
}
