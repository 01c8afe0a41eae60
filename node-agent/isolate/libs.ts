import type ivm from 'isolated-vm';
import { isShimLib, libSource } from './shim-bundle.js';
import type { WarmIsolate } from './pool.js';

// The shim's libraries kept out of the snapshot (SHIM_LIBS: pako, sql.js, lol-html's glue),
// loaded into an isolate when its shim first needs one (the synchronous host.lib callback,
// shim/web/lib.js). The script is compiled once per process (V8's code cache after the
// first) and run in the isolate's context, which only makes a function there; the shim
// calls it, so the library's code runs inside the isolate under the worker's own budgets,
// as it did when the library was part of the snapshot.

const codeCache = new Map<string, ivm.ExternalCopy<ArrayBuffer>>();

/** What host.lib(name) answers: the library's module function, made in the isolate's context. */
export function libModule(warm: WarmIsolate, name: string): ivm.Dereference<unknown> {
  if (!isShimLib(name)) throw new TypeError(`lib: no library ${name}`);
  const cachedData = codeCache.get(name);
  const script = warm.isolate.compileScriptSync(libSource(name), {
    filename: `edge-lib-${name}.js`, ...(cachedData ? { cachedData } : { produceCachedData: true }),
  }) as ivm.Script & ivm.CachedDataResult & { cachedDataRejected?: boolean };
  if (script.cachedDataRejected === true) codeCache.delete(name);
  else if (!cachedData && script.cachedData) codeCache.set(name, script.cachedData);
  try {
    const fn = script.runSync(warm.context, { reference: true }) as ivm.Reference<unknown>;
    return fn.derefInto({ release: true });
  } finally {
    script.release();
  }
}
