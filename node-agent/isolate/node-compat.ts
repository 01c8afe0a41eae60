import ivm from 'isolated-vm';
import type { HostCallbacks } from '../abi/bridge.js';
import { NODE_MODULES_GLOBAL, nodeModuleSource } from '../../common/builtin-modules.js';
import { nodeCompatSource } from './shim-bundle.js';
import type { WarmIsolate } from './pool.js';

// nodejs_compat in an isolate: the Node polyfills (node-agent/shim/node/) are a script of
// their own, evaluated when a worker with the flag loads, never part of the snapshot every
// isolate starts from. V8 compiles it once per process; later isolates take the code cache.

let cachedData: ivm.ExternalCopy<ArrayBuffer> | undefined;
/** Module name -> its export names: the same polyfills in every isolate, so read once. */
const exportNames = new Map<string, string[]>();

/**
 * Evaluates the polyfills in the worker's context and installs the Buffer and process
 * globals; `textEnv` becomes process.env. Runs before the worker's module is compiled, so
 * the continuation points AsyncLocalStorage wraps are wrapped before any tenant code runs.
 */
export async function installNodeCompat(warm: WarmIsolate, textEnv: Record<string, string>, digest: () => HostCallbacks['digest'], timeoutMs: number): Promise<void> {
  const code = nodeCompatSource();
  const script = await warm.isolate.compileScript(code, { filename: 'edge-node-compat.js', ...(cachedData ? { cachedData } : { produceCachedData: true }) }) as ivm.Script & { cachedData?: ivm.ExternalCopy<ArrayBuffer> };
  if (!cachedData && script.cachedData) cachedData = script.cachedData;
  await script.run(warm.context, { timeout: timeoutMs });
  script.release();
  const install = await warm.context.global.get('__edgeNodeInstall', { reference: true }) as ivm.Reference<(...args: unknown[]) => unknown>;
  // Synchronous as Node's createHash is: the worker's own digest callback (bindings).
  const digestCb = new ivm.Callback((alg: string, data: ArrayBuffer) => digest()(alg, data));
  await install.apply(undefined, [{ ...textEnv }, digestCb], { arguments: { copy: true }, timeout: timeoutMs });
  install.release();
}

/**
 * The synthetic module's source for `node:<name>` (after installNodeCompat). The first
 * isolate to import a module reads its export names (which evaluates that polyfill there,
 * as the import would); later ones reuse them, and evaluate it only when the module runs.
 */
export async function nodeModuleCode(warm: WarmIsolate, name: string, timeoutMs: number): Promise<string> {
  let names = exportNames.get(name);
  if (!names) {
    names = JSON.parse(await warm.context.eval(`JSON.stringify(Object.keys(globalThis.${NODE_MODULES_GLOBAL}[${JSON.stringify(name)}]))`, { timeout: timeoutMs }) as string) as string[];
    exportNames.set(name, names);
  }
  return nodeModuleSource(name, names);
}

/** Takes the polyfills' module table away once the worker's imports have taken theirs. */
export async function hideNodeModules(warm: WarmIsolate): Promise<void> {
  await warm.context.eval(`delete globalThis.${NODE_MODULES_GLOBAL}; delete globalThis.__edgeNodeInstall;`);
}
