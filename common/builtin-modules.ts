// The built-in modules a worker may import (workerd's `cloudflare:*` modules): `edge deploy`
// keeps them external when it bundles, and the isolate resolves them when it instantiates
// the worker's module. Each is a module whose exports the shim already holds (see
// node-agent/shim/workers-module.js); the host compiles its source below into the isolate.
// Any other import is refused, with the name of what was imported.

/**
 * The global the shim defines holding the cloudflare:workers exports. The load's root
 * module takes it away before any code of the worker runs (LOADED_MODULE_SOURCE), and the
 * cloudflare:workers module imports it from there, so a worker never sees a global Workers
 * does not have.
 */
export const WORKERS_MODULE_GLOBAL = '__edgeCloudflareWorkers';

/**
 * A worker's module graph is evaluated under a root module the host makes (LOAD_ROOT_SOURCE):
 * its first import takes the function the shim left in this global and deletes the global,
 * before any code of the worker runs; its body hands that function the worker module's
 * namespace once the graph has evaluated. Init then finds the namespace inside the isolate,
 * so the host can queue init right behind the evaluation without waiting for its answer.
 */
export const MODULE_LOADED_GLOBAL = '__edgeModuleLoaded';
/** The root's two imports: the shim's hand-over function, and the worker's main module. */
export const LOAD_ROOT_IMPORTS = { loaded: 'edge-internal:loaded', worker: 'edge-internal:worker' } as const;
export const LOADED_MODULE_SOURCE = `const loaded = globalThis.${MODULE_LOADED_GLOBAL};\nconst workers = globalThis.${WORKERS_MODULE_GLOBAL};\n`
  + `delete globalThis.${MODULE_LOADED_GLOBAL};\ndelete globalThis.${WORKERS_MODULE_GLOBAL};\nexport default loaded;\nexport { workers };\n`;
export const LOAD_ROOT_SOURCE = `import loaded from '${LOAD_ROOT_IMPORTS.loaded}';\nimport * as worker from '${LOAD_ROOT_IMPORTS.worker}';\nloaded(worker);\n`;

const WORKERS_EXPORTS = ['DurableObject', 'WorkerEntrypoint', 'RpcTarget', 'env', 'waitUntil', 'exports'] as const;

/** Module name -> its source in the isolate. */
export const BUILTIN_MODULES: Readonly<Record<string, string>> = {
  // Its exports come from the load's root (the only module besides the root that may import it).
  'cloudflare:workers': `import { workers as m } from '${LOAD_ROOT_IMPORTS.loaded}';\n`
    + WORKERS_EXPORTS.map((n) => `export const ${n} = m.${n};`).join('\n') + '\n',
  // workerd's EmailMessage, which libraries import at their top level (the Agents SDK does).
  // It can be made but never sent: there is no send_email binding kind here.
  'cloudflare:email': 'export class EmailMessage {\n'
    + '  constructor(from, to, raw) { this.from = String(from); this.to = String(to); this.raw = raw; }\n'
    + '}\n',
};

export function isBuiltinModule(specifier: string): boolean {
  return Object.hasOwn(BUILTIN_MODULES, specifier);
}

// nodejs_compat (spec.compatibilityFlags): the Node built-ins Workers provides. The isolate
// evaluates the polyfills (node-agent/shim/node/) only for a worker with the flag and
// builds each `node:X` module from what they hold; `edge deploy` keeps `node:X` (and the
// bare `X`, as wrangler does with the flag) external. Without the flag a `node:` import is
// refused, naming the flag.

export const NODEJS_COMPAT_FLAG = 'nodejs_compat';

/** The global the nodejs_compat script leaves its modules in (taken away after loading). */
export const NODE_MODULES_GLOBAL = '__edgeNodeModules';

/** Node module names (without `node:`) provided with nodejs_compat. */
export const NODE_BUILTIN_MODULES = [
  'buffer', 'events', 'async_hooks', 'util', 'util/types', 'process', 'crypto', 'stream', 'stream/promises', 'string_decoder',
  'path', 'path/posix', 'url', 'diagnostics_channel', 'os',
] as const;

/** Node's other built-ins: a clear refusal, since this runtime does not provide them. */
export const NODE_UNSUPPORTED_MODULES = [
  'fs', 'fs/promises', 'child_process', 'net', 'tls', 'dns', 'http', 'https', 'http2', 'zlib', 'worker_threads',
  'cluster', 'dgram', 'vm', 'v8', 'module', 'readline', 'repl', 'tty', 'perf_hooks', 'inspector', 'assert', 'querystring',
  'punycode', 'stream/web', 'timers', 'timers/promises', 'sqlite', 'test',
] as const;

/** The Node module name a specifier means (`node:buffer` or `buffer` -> `buffer`), or null. */
export function nodeModuleName(specifier: string): string | null {
  const name = specifier.startsWith('node:') ? specifier.slice(5) : specifier;
  return (NODE_BUILTIN_MODULES as readonly string[]).includes(name) ? name : null;
}

/** Whether a specifier names a Node built-in at all (provided or not). */
export function isNodeBuiltinSpecifier(specifier: string): boolean {
  const name = specifier.startsWith('node:') ? specifier.slice(5) : specifier;
  return specifier.startsWith('node:') || nodeModuleName(specifier) !== null
    || (NODE_UNSUPPORTED_MODULES as readonly string[]).includes(name);
}

/** Why a worker cannot import `specifier` (a Node built-in), for bundle and load errors. */
export function nodeImportRefusal(specifier: string, flags: readonly string[] | undefined): string {
  if (nodeModuleName(specifier) === null) {
    return `imports "${specifier}", a Node built-in this runtime does not provide (with ${NODEJS_COMPAT_FLAG} it provides ${NODE_BUILTIN_MODULES.map((n) => `node:${n}`).join(', ')}; there is no filesystem, process or socket API in a worker: use fetch, KV-style bindings and the Web APIs)`;
  }
  return flags?.includes(NODEJS_COMPAT_FLAG) ? `imports "${specifier}"`
    : `imports "${specifier}", which needs the ${NODEJS_COMPAT_FLAG} compatibility flag (spec.compatibilityFlags: [${NODEJS_COMPAT_FLAG}], or edge deploy --compatibility-flag ${NODEJS_COMPAT_FLAG})`;
}

const RESERVED = new Set(['default', 'delete', 'new', 'function', 'class', 'var', 'let', 'const', 'if', 'else', 'return', 'import', 'export', 'this', 'super', 'null', 'true', 'false', 'in', 'of', 'typeof', 'void', 'with', 'yield', 'await', 'enum', 'static', 'switch', 'case', 'do', 'while', 'for', 'try', 'catch', 'finally', 'throw', 'break', 'continue', 'debugger', 'extends', 'instanceof']);

/** The source of the synthetic `node:X` module: its default export and each named export. */
export function nodeModuleSource(name: string, exportNames: readonly string[]): string {
  const names = exportNames.filter((n) => /^[A-Za-z_$][\w$]*$/.test(n) && !RESERVED.has(n));
  return `const m = globalThis.${NODE_MODULES_GLOBAL}[${JSON.stringify(name)}];\nexport default m;\n`
    + (names.length ? `export const { ${names.join(', ')} } = m;\n` : '');
}
