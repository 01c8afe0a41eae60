import { createHash } from 'node:crypto';
import { parseLoaderCode, type LoaderCode, type ServiceCallResult, type WorkerEnv } from '../abi/bridge.js';
import { EdgeError } from '../../common/errors.js';
import { encodeModuleMap, type ModuleEntry } from '../../common/module-map.js';
import { LIMIT_BOUNDS } from '../../common/api/edgeworker.js';
import type { WorkerDefinition } from '../isolate/worker-isolate.js';
import { checkInternalCall, internalCall, sendInternalCall, type ServiceRequest, type ServiceResponse } from './service-binding.js';
import { lendEnv, unlendEnv, type LocalInvoke } from './rpc-callbacks.js';

// The host side of Worker Loader bindings (Dynamic Workers; node-agent/shim/loader.js is
// the isolate's side). A dynamic worker is a WorkerDefinition made here from the caller's
// WorkerCode and the caller's own definition: the caller's key (so its namespace's egress
// policy, CPU accounting and load fairness apply), limits no higher than the caller's (which
// the cluster's EdgePolicy already capped), and an env of the plain values it was handed
// plus those of the caller's own bindings the caller passed as capabilities; nothing else of
// the caller reaches it. The LoaderRouter (the agent's serving/dynamic-workers.ts) runs it on
// this agent in a pooled isolate, and keeps get()'s by id in an LRU per agent.

export class WorkerLoaderError extends EdgeError {}

/** A dynamic worker as the router hands it out: opaque here. */
export interface DynamicWorker { readonly dead: boolean }

/** What the router is asked to run. */
export interface DynamicLoad {
  def: WorkerDefinition;
  /** The calling worker (its key) and binding, and get()'s id (null for load()): the cache key. */
  parent: string;
  binding: string;
  id: string | null;
  /** The caller's version: a new version of the caller does not reuse the old one's dynamic workers. */
  parentDigest: string;
}

/** Implemented by the agent's DynamicWorkers (serving/dynamic-workers.ts). */
export interface LoaderRouter {
  /** The warm dynamic worker cached under (parent, binding, id) for this parent version, if any. */
  warm(parent: string, parentDigest: string, binding: string, id: string): DynamicWorker | undefined;
  /** Whether `w` is still the warm one of its get() id (then it is used now, as warm() would); false for a load()'s. */
  touch(w: DynamicWorker): boolean;
  /** Starts one (a get() whose id is loading already joins that load); rejects with the load's error. */
  load(l: DynamicLoad): Promise<DynamicWorker>;
  /** Runs one request on it, as a service call is run. */
  call(w: DynamicWorker, req: ServiceRequest, depth: number, entrypoint: string | undefined): Promise<ServiceResponse>;
  /** A load()'s worker is no longer wanted (its caller's request ended). */
  release(w: DynamicWorker): void;
}

/** The name a dynamic worker's globalOutbound service binding has in its WorkerEnv.services: never a JS identifier, so never an env key the code chose. */
export const OUTBOUND_BINDING = '#outbound';

const MODULE_SUFFIX_JS = /\.(m?js)$/;

/** WorkerCode.modules as a worker source: one plain ES module as it is, anything else as a module map (common/module-map.ts). */
export function dynamicSource(code: Pick<LoaderCode, 'mainModule' | 'modules'>): string {
  const names = Object.keys(code.modules);
  const main = code.modules[code.mainModule];
  if (names.length === 1 && main && main[0] === 'js' && typeof main[1] === 'string' && MODULE_SUFFIX_JS.test(code.mainModule)) return main[1];
  const modules: Record<string, ModuleEntry> = {};
  for (const [name, [type, content]] of Object.entries(code.modules)) {
    const text = typeof content === 'string' ? content : Buffer.from(content).toString('base64');
    switch (type) {
      case 'js': modules[name] = { js: text }; break;
      case 'cjs': modules[name] = { cjs: text }; break;
      case 'text': modules[name] = { text }; break;
      case 'data': modules[name] = { data: typeof content === 'string' ? Buffer.from(content).toString('base64') : text }; break;
      case 'wasm': modules[name] = { wasm: text }; break;
      case 'json': {
        try { modules[name] = { json: JSON.parse(text) as unknown }; } catch (err) {
          throw new TypeError(`WorkerCode.modules["${name}"] is not JSON: ${(err as Error).message}`);
        }
        break;
      }
    }
  }
  return encodeModuleMap({ mainModule: code.mainModule, modules });
}

const capped = (mine: number, asked: number | undefined, min: number): number => asked === undefined ? mine : Math.max(min, Math.min(mine, Math.ceil(asked)));

/**
 * The definition of a dynamic worker: `code` run under the caller `parent`'s key, with
 * limits no higher than the caller's, and an env of plain values plus the caller's bindings
 * passed as capabilities. Throws TypeError for what the caller got wrong.
 */
export function dynamicDefinition(parent: WorkerDefinition, tag: string, code: LoaderCode, refsToken?: string): WorkerDefinition {
  const source = dynamicSource(code);
  const env: WorkerEnv = { text: {}, values: code.values };
  const p = parent.env;
  for (const [name, binding] of Object.entries(code.caps)) {
    if (p.services?.[binding]) (env.services ??= {})[name] = p.services[binding];
    else if (p.actors?.[binding]) (env.actors ??= {})[name] = p.actors[binding];
    else if (p.ai?.[binding]) (env.ai ??= {})[name] = p.ai[binding];
    else if (p.loaders?.includes(binding)) (env.loaders ??= []).push(name);
    else throw new TypeError(`WorkerCode.env.${name}: ${binding} is not one of worker ${parent.name}'s bindings`);
  }
  if (code.outbound === 'block') env.outbound = 'block';
  else if (code.outbound.startsWith('service:')) {
    const binding = code.outbound.slice('service:'.length);
    const target = p.services?.[binding];
    if (!target) throw new TypeError(`WorkerCode.globalOutbound: ${binding} is not one of worker ${parent.name}'s service bindings`);
    (env.services ??= {})[OUTBOUND_BINDING] = target;
    env.outbound = `service:${OUTBOUND_BINDING}`;
  } else if (code.outbound !== 'default') throw new TypeError('WorkerCode.globalOutbound: malformed');
  const l = parent.limits;
  const limits = {
    cpuMsPerRequest: capped(l.cpuMsPerRequest, code.limits.cpuMs, LIMIT_BOUNDS.cpuMsPerRequest.min),
    memoryMiB: capped(l.memoryMiB, code.limits.memoryMiB, LIMIT_BOUNDS.memoryMiB.min),
    subrequests: capped(l.subrequests, code.limits.subRequests, 0),
    wallMsPerRequest: l.wallMsPerRequest,
  };
  const flags = code.compatibilityFlags;
  // The refs' ids and token differ from load to load; their names shape the env.
  const refNames = Object.keys(code.refs).sort();
  const digest = `sha256:${createHash('sha256').update(source).update('\0').update(JSON.stringify({ env, refNames, limits, flags, date: code.compatibilityDate })).digest('hex')}`;
  if (refNames.length > 0) {
    if (refsToken === undefined) throw new TypeError('WorkerCode.env: functions and RpcTargets cannot be passed from here');
    env.refs = { token: refsToken, stubs: code.refs };
  }
  return {
    key: parent.key,
    name: `${parent.key}#${tag}`,
    source,
    digest,
    limits,
    env,
    ...(parent.egress ? { egress: parent.egress } : {}),
    ...(flags.length ? { compatibilityFlags: flags } : {}),
  };
}

const ID_MAX = 256;
/**
 * Dynamic workers one request may start (load()s, and get()s that found none warm): each
 * takes an isolate, and one made while the pool is empty holds the event loop for a few
 * milliseconds, so a loop of loads is bounded here, whatever the caller's subrequest limit
 * (each load is a subrequest too).
 */
export const MAX_LOADS_PER_REQUEST = 16;
let oneOffs = 0;

/** One isolate's Worker Loader bindings: the loaderGet, loaderLoad and loaderCall callbacks' work. */
export class LoaderCalls {
  private readonly numbers = new Map<DynamicWorker, number>();
  private readonly byNumber = new Map<number, DynamicWorker>();
  private nextNumber = 1;
  /** load()s made during the request in flight: gone when it ends. */
  private readonly oneOff = new Set<DynamicWorker>();
  /** The request's load()s by the shim's ticket (loaderCall's -ticket), loading or loaded. */
  private readonly tickets = new Map<number, Promise<DynamicWorker>>();
  /** Loads started during the request in flight (MAX_LOADS_PER_REQUEST). */
  private loadsThisRequest = 0;
  /** Tokens under which dynamic workers call back the functions and RpcTargets this isolate put in their env: the request's, and the isolate's (get()'s). */
  private readonly requestTokens: string[] = [];
  private readonly isolateTokens: string[] = [];
  private readonly bindings: ReadonlySet<string>;

  constructor(
    private readonly parent: WorkerDefinition,
    private readonly router: LoaderRouter | undefined,
    /** The service depth of the request in flight. */
    private readonly depth: () => number,
    private readonly invokeLocal?: LocalInvoke,
  ) {
    this.bindings = new Set(parent.env.loaders ?? []);
  }

  private number(w: DynamicWorker): number {
    let n = this.numbers.get(w);
    if (n === undefined) {
      n = this.nextNumber++;
      this.numbers.set(w, n);
      this.byNumber.set(n, w);
    }
    return n;
  }

  private binding(binding: unknown): string {
    if (typeof binding !== 'string' || !this.bindings.has(binding)) throw new TypeError(`worker ${this.parent.name} has no Worker Loader binding ${String(binding)}`);
    return binding;
  }

  get(binding: unknown, id: unknown): number | null {
    const b = this.binding(binding);
    if (typeof id !== 'string' || id.length === 0 || id.length > ID_MAX) throw new TypeError(`env.${b}.get(): the id must be a string of 1 to ${ID_MAX} characters`);
    const w = this.router?.warm(this.parent.key, this.parent.digest, b, id);
    return w ? this.number(w) : null;
  }

  load(binding: unknown, id: unknown, raw: unknown, countSubrequest: () => void, ticket?: unknown): Promise<number> {
    const loading = this.start(binding, id, raw, countSubrequest);
    if (id === null && typeof ticket === 'number' && Number.isSafeInteger(ticket) && ticket > 0 && !this.tickets.has(ticket)) {
      // A call naming the ticket waits for this load; one that fails is answered by its call, not left unhandled here.
      const w = loading.then((n) => this.byNumber.get(n)!);
      w.catch(() => {});
      this.tickets.set(ticket, w);
    }
    return loading;
  }

  private async start(binding: unknown, id: unknown, raw: unknown, countSubrequest: () => void): Promise<number> {
    const b = this.binding(binding);
    if (id !== null && (typeof id !== 'string' || id.length === 0 || id.length > ID_MAX)) throw new TypeError(`env.${b}.get(): the id must be a string of 1 to ${ID_MAX} characters`);
    const parsed = parseLoaderCode(raw);
    if (!parsed.ok) throw new TypeError(`env.${b}: malformed WorkerCode: ${parsed.error}`);
    if (!this.router) throw new WorkerLoaderError(`env.${b}: Worker Loaders are not available on this agent`);
    if (this.loadsThisRequest >= MAX_LOADS_PER_REQUEST) {
      throw new RangeError(`env.${b}: this request already started ${MAX_LOADS_PER_REQUEST} dynamic workers, the most one request may start; reuse them, or use get(id) with ids that stay warm`);
    }
    this.loadsThisRequest += 1;
    try {
      countSubrequest();
    } catch (err) {
      throw new Error(`env.${b}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    const tag = id ?? `load-${++oneOffs}`;
    let token: string | undefined;
    if (Object.keys(parsed.data.refs).length > 0 && this.invokeLocal) {
      token = lendEnv(this.invokeLocal);
      (id === null ? this.requestTokens : this.isolateTokens).push(token);
    }
    const def = dynamicDefinition(this.parent, tag, parsed.data, token);
    const w = await this.router.load({ def, parent: this.parent.key, parentDigest: this.parent.digest, binding: b, id });
    if (id === null) this.oneOff.add(w);
    return this.number(w);
  }

  /** `warm`: a get(id)'s call by the number it had (HostCallbacks.loaderCall): null, with nothing sent or counted, once that worker is no longer the warm one. */
  async call(handle: unknown, entrypoint: unknown, raw: unknown, countSubrequest: () => void, warm = false): Promise<ServiceCallResult | null> {
    const pending = typeof handle === 'number' && handle < 0 && !warm ? this.tickets.get(-handle) : undefined;
    // Checked while a load() named by its ticket is still loading, not after.
    const what = 'dynamic worker';
    const init = pending ? checkInternalCall({ what, caller: this.parent.name }, raw) : undefined;
    const w = pending ? await pending : typeof handle === 'number' ? this.byNumber.get(handle) : undefined;
    if (warm && (!w || w.dead || !this.router?.touch(w))) return null;
    if (!w) throw new TypeError(`worker ${this.parent.name}: no such dynamic worker`);
    if (entrypoint !== null && typeof entrypoint !== 'string') throw new TypeError('getEntrypoint(name): name must be a string');
    const router = this.router!;
    const c = {
      what, caller: this.parent.name, depth: this.depth(), countSubrequest, invokeLocal: this.invokeLocal,
      entrypoint: entrypoint ?? undefined,
      send: (req: ServiceRequest, depth: number) => {
        if (w.dead) throw new WorkerLoaderError('the dynamic worker is gone (its caller\'s request that load()ed it ended, or it was evicted); load it again');
        return router.call(w, req, depth, entrypoint ?? undefined);
      },
    };
    return init ? sendInternalCall(c, init) : internalCall(c, raw);
  }

  /** The request in flight ended: its load()s go, and numbers of workers gone are forgotten. */
  requestEnded(): void {
    this.loadsThisRequest = 0;
    // Every request of every isolate ends here, and most loaded nothing: clear() and
    // splice(0) allocate even when empty, a Map's new table in old space (docs/agent.md,
    // "Old-space garbage per request").
    if (this.tickets.size > 0) this.tickets.clear();
    if (this.oneOff.size > 0) {
      for (const w of this.oneOff) this.router?.release(w);
      this.oneOff.clear();
    }
    if (this.requestTokens.length > 0) for (const t of this.requestTokens.splice(0)) unlendEnv(t);
    for (const [w, n] of this.numbers) {
      if (!w.dead) continue;
      this.numbers.delete(w);
      this.byNumber.delete(n);
    }
  }

  dispose(): void {
    this.requestEnded();
    for (const t of this.isolateTokens.splice(0)) unlendEnv(t);
    this.numbers.clear();
    this.byNumber.clear();
  }
}
