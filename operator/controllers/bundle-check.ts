import ivm from 'isolated-vm';
import { decodeModuleMap, resolveModuleName, type ModuleMap } from '../../common/module-map.js';
import { BUILTIN_MODULES, NODEJS_COMPAT_FLAG, isBuiltinModule, isNodeBuiltinSpecifier, nodeImportRefusal, nodeModuleName } from '../../common/builtin-modules.js';

// The operator compiles every new bundle before publishing it, so a syntax error becomes
// `Ready=False, reason=BundleInvalid` with V8's message and never reaches an agent (whose
// previous version keeps serving). Compiling runs no user code. What only shows when the
// module runs (a throw at top level, no default export) is caught by the agents, which
// report it back the same way.

const CHECK_MEMORY_MIB = 64;
/** Node's WebAssembly.validate (the project's TypeScript lib has no WebAssembly types): validates without compiling or running. */
const wasmValidate = (bytes: Uint8Array): boolean => (globalThis as unknown as { WebAssembly: { validate(b: Uint8Array): boolean } }).WebAssembly.validate(bytes);
/** Bundles already checked, by digest: null when fine, else the message. */
const cache = new Map<string, string | null>();
const MAX_CACHED = 10_000;
let isolate: ivm.Isolate | undefined;

/**
 * isolated-vm does not survive compiling and releasing modules of one isolate from
 * several calls at once (a crash in its module map), so checks run one at a time; each
 * takes about 0.1 ms.
 */
let chain: Promise<unknown> = Promise.resolve();

/** Returns undefined when the bundle compiles as a single module, else what is wrong. */
export function checkBundle(digest: string, source: string, filename: string, flags: readonly string[] = []): Promise<string | undefined> {
  // What a bundle may import depends on its flags (nodejs_compat: node:*).
  const key = flags.includes(NODEJS_COMPAT_FLAG) ? `${digest}+${NODEJS_COMPAT_FLAG}` : digest;
  const known = cache.get(key);
  if (known !== undefined) return Promise.resolve(known ?? undefined);
  const run = chain.then(() => check(key, source, filename, flags));
  chain = run.catch(() => undefined);
  return run;
}

async function check(digest: string, source: string, filename: string, flags: readonly string[]): Promise<string | undefined> {
  const known = cache.get(digest);
  if (known !== undefined) return known ?? undefined;
  if (!isolate || isolate.isDisposed) isolate = new ivm.Isolate({ memoryLimit: CHECK_MEMORY_MIB });
  let problem: string | null = null;
  let map: ModuleMap | null = null;
  try { map = decodeModuleMap(source); } catch (err) { problem = (err as Error).message; }
  if (map) problem = await checkModuleMap(isolate, map, flags);
  else if (problem === null) problem = await checkModule(isolate, source, filename, flags);
  if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value!);
  cache.set(digest, problem);
  return problem ?? undefined;
}

async function checkModule(isolate: ivm.Isolate, source: string, filename: string, flags: readonly string[]): Promise<string | null> {
  let problem: string | null = null;
  try {
    const module = await isolate.compileModule(source, { filename });
    // The runtime's built-in modules (cloudflare:workers) are the only imports the agents resolve.
    const compat = flags.includes(NODEJS_COMPAT_FLAG);
    const imports = module.dependencySpecifiers.filter((s) => !isBuiltinModule(s) && !(compat && nodeModuleName(s) !== null));
    if (imports.length > 0) {
      problem = isNodeBuiltinSpecifier(imports[0]!) ? nodeImportRefusal(imports[0]!, flags)
        : `imports "${imports[0]}", but a worker must be a single bundled module (no imports but ${Object.keys(BUILTIN_MODULES).join(', ')})`;
    }
    module.release();
  } catch (err) {
    problem = `does not compile: ${err instanceof Error ? err.message : String(err)}`;
  }
  return problem;
}

/**
 * A module map (common/module-map.ts): every ES and CommonJS module compiles, every ES
 * import names a built-in or a module of the map, and every wasm module validates. As for a
 * single module, nothing runs; require() is dynamic and is checked only when the module runs.
 */
async function checkModuleMap(isolate: ivm.Isolate, map: ModuleMap, flags: readonly string[]): Promise<string | null> {
  const compat = flags.includes(NODEJS_COMPAT_FLAG);
  for (const [name, e] of Object.entries(map.modules)) {
    if ('wasm' in e) {
      if (!wasmValidate(Buffer.from(e.wasm, 'base64'))) return `module "${name}" is not a valid WebAssembly module`;
      continue;
    }
    if ('cjs' in e) {
      try {
        const script = await isolate.compileScript(`(function (exports, require, module, __filename, __dirname) {\n${e.cjs}\n});`, { filename: name, lineOffset: -1 });
        script.release();
      } catch (err) {
        return `module "${name}" does not compile: ${err instanceof Error ? err.message : String(err)}`;
      }
      continue;
    }
    if (!('js' in e)) continue;
    let specifiers: string[];
    try {
      const module = await isolate.compileModule(e.js, { filename: name });
      specifiers = module.dependencySpecifiers;
      module.release();
    } catch (err) {
      return `module "${name}" does not compile: ${err instanceof Error ? err.message : String(err)}`;
    }
    for (const s of specifiers) {
      if (isBuiltinModule(s) || (compat && nodeModuleName(s) !== null)) continue;
      if (isNodeBuiltinSpecifier(s)) return `module "${name}" ${nodeImportRefusal(s, flags)}`;
      const target = resolveModuleName(name, s);
      if (target === null) return `module "${name}" imports "${s}", which climbs out of the worker's root`;
      if (!Object.hasOwn(map.modules, target)) return `No such module "${target}" (imported from "${name}" as "${s}")`;
    }
  }
  return null;
}

export function disposeBundleChecker(): void {
  if (isolate && !isolate.isDisposed) isolate.dispose();
  isolate = undefined;
}
