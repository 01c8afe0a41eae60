import type ivm from 'isolated-vm';

// V8's code cache for worker modules, per process, by the worker version's digest: the first
// isolate to compile a version produces the cache, later isolates of the same version (a
// deployed worker's next isolate, a Worker Loader's load() of code it ran before, a get()
// re-created after eviction) consume it and skip most of the parse. Bounded in bytes, least
// recently used out first. V8 checks the data against the source and its own flags, and
// rejects what does not fit (then the module is compiled as if there were none).

/** Bytes of cached code data kept per process. */
export const CODE_CACHE_BYTES = 32 * 1024 * 1024;
/** Sources shorter than this compile about as fast as their cache would be read: not cached. */
const MIN_SOURCE_CHARS = 2048;

/** What isolated-vm sets on a module compiled with cachedData or produceCachedData (its typings leave it out). */
type CompiledModule = ivm.Module & ivm.CachedDataResult & { cachedDataRejected?: boolean };

const cache = new Map<string, { data: ivm.ExternalCopy<ArrayBuffer>; bytes: number }>();
let bytes = 0;

function remember(key: string, data: ivm.ExternalCopy<ArrayBuffer>): void {
  const size = data.copy().byteLength;
  if (size > CODE_CACHE_BYTES / 4) { data.release(); return; }
  cache.set(key, { data, bytes: size });
  bytes += size;
  for (const [k, e] of cache) {
    if (bytes <= CODE_CACHE_BYTES) break;
    cache.delete(k);
    bytes -= e.bytes;
    e.data.release();
  }
}

/** compileModule with the code cache of `key` (a worker version's digest). */
export async function compileCached(isolate: ivm.Isolate, source: string, key: string, filename: string): Promise<ivm.Module> {
  if (source.length < MIN_SOURCE_CHARS) return isolate.compileModule(source, { filename });
  const hit = cache.get(key);
  if (hit) {
    cache.delete(key);
    cache.set(key, hit);
    const module = await isolate.compileModule(source, { filename, cachedData: hit.data }) as CompiledModule;
    if (module.cachedDataRejected === true) {
      cache.delete(key);
      bytes -= hit.bytes;
    }
    return module;
  }
  const module = await isolate.compileModule(source, { filename, produceCachedData: true }) as CompiledModule;
  if (module.cachedData) remember(key, module.cachedData);
  return module;
}

/** Entries and bytes held (tests, metrics). */
export const codeCacheStats = (): { entries: number; bytes: number } => ({ entries: cache.size, bytes });
