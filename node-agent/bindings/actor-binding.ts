import { ActorIds } from './actor-id.js';
import { withCallbacks, type LocalInvoke } from './rpc-callbacks.js';
import { ActorExceptionError, parseActorFetchInit, type ActorFetchInit, type ActorFetchResult, type ActorIdKind, type ActorIdRecord } from '../abi/bridge.js';
import type { BodyStream } from '../../common/body-stream.js';
import { ActorStreams } from './actor-streams.js';

export type { ActorFetchInit, ActorFetchResult, ActorIdKind, ActorIdRecord };

// The host side of actor namespace bindings (env.<binding> for a DurableActor, see
// node-agent/shim/durable.js). The isolate knows a binding by its name only: ids are
// computed here (the DurableActor's uid never enters the isolate) and stub.fetch() calls
// go to the ActorRouter the agent injects (IsolateHooks.actorRouter), which finds the
// actor's one activation (on this agent or another) and returns its buffered response.

/** The DurableActor a binding names: its Kubernetes namespace and name, and its metadata.uid (the id key). */
export interface ActorTarget {
  namespace: string;
  actor: string;
  uid: string;
}

/** One stub.fetch() request: its body whole, or streamed (`stream`, body null). */
export interface ActorRequest {
  url: string;
  method: string;
  headers: [string, string][];
  body: Uint8Array | null;
  stream?: BodyStream;
}

/**
 * The actor's response: its body whole, or streamed (`stream`, body empty), which the
 * reader must read to its end or cancel. `webSocket`: a socket handle.
 */
export interface ActorResponse {
  status: number;
  statusText: string;
  headers: [string, string][];
  body: Uint8Array;
  stream?: BodyStream;
  webSocket?: number;
}

export interface ActorCallOptions {
  /** The name the id was made from (idFromName), checked against the id: the activation's state.id.name. */
  name?: string;
}

/**
 * Implemented by the agent's actor router: delivers a request to the actor `id` (64
 * lowercase hex, checked to belong to `target`) of `target`, wherever it lives, and
 * settles with its buffered response; a rejection's message reaches the caller's
 * stub.fetch() (prefixed with the binding), so it must not carry addresses.
 */
export interface ActorRouter {
  fetch(target: ActorTarget, id: string, req: ActorRequest, opts?: ActorCallOptions): Promise<ActorResponse>;
}

/** A whole body to or from an actor is bounded by this (a streamed one is not: it is never held whole). */
export const MAX_ACTOR_BODY_BYTES = 32 * 1024 * 1024;

/**
 * The name an id was made from (idFromName), URI-encoded, on the request to the actor:
 * wherever the actor is activated it becomes `state.id.name` (partyserver and others read
 * it). Set only by the binding, which drops a worker's own header of that name; the
 * owner checks it against the id again and removes it before the actor sees the request.
 */
export const ACTOR_NAME_HEADER = 'x-edge-actor-name';

const toArrayBuffer = (b: Uint8Array): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;

/** One isolate's actor bindings (WorkerEnv.actors) and the router their stubs call. */
export class ActorCalls {
  private readonly bindings = new Map<string, { target: ActorTarget; ids: ActorIds }>();
  /** Calls with a body streaming (either way), by the shim's call id. */
  readonly streams = new ActorStreams();

  constructor(
    bindings: Record<string, ActorTarget> | undefined,
    private readonly router: ActorRouter | undefined,
    private readonly workerName: string,
    /** Told the registry id of each WebSocket an actor hands this isolate (so it may return it). */
    private readonly grantSocket: (id: number) => void = () => undefined,
    /** Runs an RPC callee's call on a function or RpcTarget this isolate passed (rpc-callbacks.ts). */
    private readonly invokeLocal?: LocalInvoke,
  ) {
    for (const [name, target] of Object.entries(bindings ?? {})) {
      this.bindings.set(name, { target: { namespace: target.namespace, actor: target.actor, uid: target.uid }, ids: new ActorIds(target.uid) });
    }
  }

  private binding(name: unknown): { target: ActorTarget; ids: ActorIds } {
    const b = typeof name === 'string' ? this.bindings.get(name) : undefined;
    if (!b) throw new TypeError(`worker ${this.workerName} has no actor binding ${String(name)}`);
    return b;
  }

  /** The actorId callback: an id of the binding's namespace, or a TypeError saying why not (never naming the uid). */
  id(binding: unknown, kind: unknown, value: unknown): ActorIdRecord {
    const { ids } = this.binding(binding);
    switch (kind as ActorIdKind) {
      case 'name': {
        const id = ids.idFromName(String(value));
        return { id: id.hex, name: id.name! };
      }
      case 'unique': return { id: ids.newUniqueId().hex };
      case 'string': return { id: ids.idFromString(value as string).hex };
      default: throw new TypeError(`actorId: unknown kind ${String(kind)}`);
    }
  }

  /**
   * The actorFetch callback's work: checks the id belongs to the binding's namespace,
   * counts a subrequest, and calls the router. Errors say what failed, naming the
   * binding; the router's own messages are passed on, so they must not carry addresses.
   */
  async fetch(binding: unknown, id: unknown, name: unknown, raw: unknown, countSubrequest: () => void): Promise<ActorFetchResult> {
    const what = `env.${String(binding)}.get(id).fetch()`;
    const b = this.binding(binding);
    if (typeof id !== 'string' || !b.ids.owns(id)) throw new TypeError(`${what}: the id is not an id of this actor namespace`);
    const hex = id.toLowerCase();
    const init = parseActorFetchInit(raw);
    if (!init) throw new TypeError(`${what}: malformed request from worker ${this.workerName}`);
    // A name travels only when it really is the id's name.
    const opts: ActorCallOptions = {};
    if (typeof name === 'string' && b.ids.idFromName(name).hex === hex) opts.name = name;
    try {
      countSubrequest();
    } catch (err) {
      throw new Error(`${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    if (!this.router) throw new Error(`${what}: actors are not available on this agent`);
    // Registered before anything is awaited: the shim's first actorWrite may come next.
    const gen = this.streams.generation;
    const upload = init.body === 1 ? this.streams.upload(init.id) : undefined;
    let res: ActorResponse;
    try {
      // The agent's own headers on actor calls are the agent's to set (x-edge-adopt-socket: actors/router.ts).
      const own = init.headers.filter(([k]) => { const l = k.toLowerCase(); return l !== ACTOR_NAME_HEADER && l !== 'x-edge-adopt-socket'; });
      if (opts.name !== undefined) own.push([ACTOR_NAME_HEADER, encodeURIComponent(opts.name)]);
      res = await withCallbacks(init.method, own, this.invokeLocal, (headers) => this.router!.fetch(b.target, hex, {
        url: init.url, method: init.method, headers,
        body: init.body instanceof ArrayBuffer ? new Uint8Array(init.body) : null,
        ...(upload ? { stream: upload } : {}),
      }, opts));
    } catch (err) {
      if (upload) this.streams.cancel(init.id, 'the actor call failed');
      // The actor's own exception reaches the caller as itself (hostCallbacks passes it on).
      if (err instanceof ActorExceptionError) throw err;
      throw new Error(`${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    if (res.stream && !this.streams.download(init.id, res.stream, gen)) {
      res.stream.cancel('the caller\'s request is over');
      throw new Error(`${what}: the caller's request ended before the actor answered`);
    }
    if (!res.stream && res.body.byteLength > MAX_ACTOR_BODY_BYTES) {
      throw new RangeError(`${what}: the actor's response body of ${res.body.byteLength} bytes is over the ${MAX_ACTOR_BODY_BYTES}-byte limit`);
    }
    const out: ActorFetchResult = { status: res.status, statusText: res.statusText, headers: res.headers, body: res.stream ? 'stream' : toArrayBuffer(res.body) };
    if (res.webSocket !== undefined) {
      this.grantSocket(res.webSocket);
      out.webSocket = res.webSocket;
    }
    return out;
  }
}
