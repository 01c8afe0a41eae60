// The built-in modules a worker may import (workerd's `cloudflare:*` modules): `edge deploy`
// keeps them external when it bundles, and the isolate resolves them when it instantiates
// the worker's module. Each is a module whose exports the shim already holds (see
// node-agent/shim/workers-module.js); the host compiles its source below into the isolate.
// Any other import is refused, with the name of what was imported.

/**
 * The global the shim defines holding the cloudflare:workers exports. The module takes it
 * away as it loads (before any code of the worker runs), and __edgeInit removes it where no
 * module imported it, so a worker never sees a global Workers does not have.
 */
export const WORKERS_MODULE_GLOBAL = '__edgeCloudflareWorkers';

const WORKERS_EXPORTS = ['DurableObject', 'WorkerEntrypoint', 'RpcTarget', 'env', 'waitUntil'] as const;

/** Module name -> its source in the isolate. */
export const BUILTIN_MODULES: Readonly<Record<string, string>> = {
  'cloudflare:workers': `const m = globalThis.${WORKERS_MODULE_GLOBAL};\ndelete globalThis.${WORKERS_MODULE_GLOBAL};\n`
    + WORKERS_EXPORTS.map((n) => `export const ${n} = m.${n};`).join('\n') + '\n',
};

export function isBuiltinModule(specifier: string): boolean {
  return Object.hasOwn(BUILTIN_MODULES, specifier);
}
