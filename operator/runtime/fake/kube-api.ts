import { KubeError, type KubeApi, type RequestOptions } from '../kube-client.js';

// An in-memory KubeApi with the apiserver rules the reconcilers lean on: GET of a missing
// object is a 404 KubeError; a merge PATCH carrying a stale metadata.resourceVersion is a
// 409; a PATCH of `.../status` changes only the status; every write bumps resourceVersion;
// POST with generateName names the object. Objects are addressed by their API path.

type Json = Record<string, unknown>;

export interface RecordedRequest { method: string; path: string; body?: unknown }

const clone = <T>(v: T): T => structuredClone(v);
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** RFC 7386: objects merge key by key, null removes a key, anything else replaces. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return clone(patch);
  const out: Json = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export class FakeKubeApi implements KubeApi {
  private readonly objects = new Map<string, Json>();
  private version = 0;
  private generated = 0;
  private readonly failures: { method: string; path: string; error: Error }[] = [];
  /** Every request, in order (GETs included). */
  readonly requests: RecordedRequest[] = [];

  /** Stores `obj` at `path` as if created there; returns it with its resourceVersion. */
  seed<T extends object>(path: string, obj: T): T {
    const stored = mergePatch({}, obj) as Json;
    stored.metadata = { ...(stored.metadata as Json | undefined), resourceVersion: String(++this.version) };
    this.objects.set(path, stored);
    return clone(stored) as T;
  }

  /** The object at `path` as the "apiserver" has it now. */
  get<T = Json>(path: string): T | undefined {
    const o = this.objects.get(path);
    return o === undefined ? undefined : clone(o) as T;
  }

  /** Objects created under a collection path (e.g. the Events of a namespace). */
  created<T = Json>(collection: string): T[] {
    return [...this.objects.entries()].filter(([p]) => p.startsWith(`${collection}/`)).map(([, o]) => clone(o) as T);
  }

  delete(path: string): void { this.objects.delete(path); }

  /** The next `method` request to exactly `path` rejects with `error`. */
  failNext(method: string, path: string, error: Error): void { this.failures.push({ method, path, error }); }

  /** The non-GET requests, as "METHOD path": what a test asserts when "nothing was written" matters. */
  writes(): string[] {
    return this.requests.filter((r) => r.method !== 'GET').map((r) => `${r.method} ${r.path}`);
  }

  request<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    this.requests.push({ method, path, ...(opts.body === undefined ? {} : { body: clone(opts.body) }) });
    const i = this.failures.findIndex((f) => f.method === method && f.path === path);
    if (i >= 0) return Promise.reject(this.failures.splice(i, 1)[0]!.error);
    try {
      return Promise.resolve(this.handle(method, path, opts) as T);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  private handle(method: string, path: string, opts: RequestOptions): unknown {
    const notFound = () => new KubeError(404, 'NotFound', `${method} ${path}: 404 not found`);
    if (method === 'GET') {
      const o = this.objects.get(path);
      if (!o) throw notFound();
      return clone(o);
    }
    if (method === 'PATCH') {
      if (opts.patch !== 'merge') throw new Error(`fake apiserver: only merge patches are supported, got ${opts.patch ?? 'none'}`);
      const status = path.endsWith('/status');
      const objPath = status ? path.slice(0, -'/status'.length) : path;
      const cur = this.objects.get(objPath);
      if (!cur) throw notFound();
      const body = (opts.body ?? {}) as Json;
      const meta = isObject(body.metadata) ? body.metadata : undefined;
      const curVersion = (cur.metadata as Json).resourceVersion;
      if (meta?.resourceVersion !== undefined && meta.resourceVersion !== curVersion) {
        throw new KubeError(409, 'Conflict', `${method} ${path}: 409 the object has been modified`);
      }
      const patch = status ? { status: body.status } : body;
      const next = mergePatch(cur, patch) as Json;
      next.metadata = { ...(next.metadata as Json), resourceVersion: String(++this.version) };
      this.objects.set(objPath, next);
      return clone(next);
    }
    if (method === 'POST') {
      const obj = mergePatch({}, opts.body) as Json;
      const meta = (isObject(obj.metadata) ? obj.metadata : {});
      const name = typeof meta.name === 'string' ? meta.name : `${typeof meta.generateName === 'string' ? meta.generateName : ''}${++this.generated}`;
      obj.metadata = { ...meta, name, resourceVersion: String(++this.version) };
      this.objects.set(`${path}/${name}`, obj);
      return clone(obj);
    }
    throw new Error(`fake apiserver: ${method} is not supported`);
  }
}
