import { ActorExceptionError, RPC_METHOD, RPC_URL, parseServiceCallInit, type ServiceCallInit, type ServiceCallResult } from '../abi/bridge.js';
import { EdgeError } from '../../common/errors.js';
import { MAX_ACTOR_BODY_BYTES } from './actor-binding.js';
import { withCallbacks, type LocalInvoke } from './rpc-callbacks.js';

// The host side of service bindings (env.<binding> naming another EdgeWorker of the same
// namespace; see node-agent/shim/service.js). The isolate knows a binding by its name; the
// target (namespace, worker, entrypoint) stays here. A call is a buffered request to the
// target worker on this agent (ServiceRouter, the agent's worker server): its fetch(), or an
// RPC call (the runtime's internal request, see node-agent/shim/rpc.js), one hop deeper
// than the request that made it. Only workers of the binding worker's own namespace are
// reachable: the resolver fills in the namespace, and the router is asked for no other.

/**
 * How deep service calls (a worker calling itself included) may nest; the call past it
 * fails at its caller with an error it can catch (workerd bounds this too, as its
 * subrequest depth). Below the agent's default isolates per worker (16): each hop of a
 * worker calling itself holds one of its isolates, so the refusal comes before the hops
 * would wait on each other for an isolate.
 */
export const MAX_SERVICE_DEPTH = 8;

export interface ServiceTarget {
  namespace: string;
  worker: string;
  entrypoint?: string;
}

/** One service call, body buffered. */
export interface ServiceRequest {
  url: string;
  method: string;
  headers: [string, string][];
  body: Uint8Array | null;
}

export interface ServiceResponse {
  status: number;
  statusText: string;
  headers: [string, string][];
  body: Uint8Array;
}

/**
 * Implemented by the agent's worker server: runs `req` on the served version of the worker
 * `target` at service depth `depth`, and settles with its buffered response. Rejects with a
 * ServiceUnavailableError when that worker is not served here; with ActorExceptionError
 * when the target's own code threw (an RPC's exception, rethrown at the caller as itself).
 */
export interface ServiceRouter {
  call(target: ServiceTarget, req: ServiceRequest, depth: number): Promise<ServiceResponse>;
}

export class ServiceUnavailableError extends EdgeError {}
export class ServiceDepthError extends EdgeError {}

const toArrayBuffer = (b: Uint8Array): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;

/** One isolate's service bindings (WorkerEnv.services) and the router their calls go to. */
export class ServiceCalls {
  private readonly bindings = new Map<string, ServiceTarget>();

  constructor(
    bindings: Record<string, ServiceTarget> | undefined,
    private readonly router: ServiceRouter | undefined,
    private readonly workerName: string,
    /** The service depth of the request in flight. */
    private readonly depth: () => number,
    /** Runs an RPC callee's call on a function or RpcTarget this isolate passed (rpc-callbacks.ts). */
    private readonly invokeLocal?: LocalInvoke,
  ) {
    for (const [name, t] of Object.entries(bindings ?? {})) {
      this.bindings.set(name, { namespace: t.namespace, worker: t.worker, ...(t.entrypoint ? { entrypoint: t.entrypoint } : {}) });
    }
  }

  /** The serviceCall callback's work: checks, counts a subrequest, bounds the depth, calls the router. */
  async call(binding: unknown, raw: unknown, countSubrequest: () => void): Promise<ServiceCallResult> {
    const target = typeof binding === 'string' ? this.bindings.get(binding) : undefined;
    if (!target) throw new TypeError(`worker ${this.workerName} has no service binding ${String(binding)}`);
    const router = this.router;
    return internalCall({
      what: `env.${String(binding)}`, caller: this.workerName, depth: this.depth(), countSubrequest, invokeLocal: this.invokeLocal, entrypoint: target.entrypoint,
      send: router ? (req, depth) => router.call(target, req, depth) : undefined,
    }, raw);
  }
}

/** One internal call: a service binding's, or a dynamic worker's (bindings/worker-loader.ts). */
export interface InternalCall {
  /** How errors name what was called (`env.SVC`). */
  what: string;
  /** The calling worker. */
  caller: string;
  /** The service depth of the caller's request in flight. */
  depth: number;
  countSubrequest: () => void;
  invokeLocal: LocalInvoke | undefined;
  /** The target's entrypoint: an RPC's URL names it. */
  entrypoint: string | undefined;
  /** Runs the request at `depth` on the target; absent: calls are not available here. */
  send: ((req: ServiceRequest, depth: number) => Promise<ServiceResponse>) | undefined;
}

/**
 * The work of a serviceCall or loaderCall callback: checks the request, counts a
 * subrequest, bounds the depth, lends the call's callbacks, sends it, and bounds the answer.
 */
export async function internalCall(c: InternalCall, raw: unknown): Promise<ServiceCallResult> {
  return sendInternalCall(c, checkInternalCall(c, raw));
}

/** internalCall's check of the shim's request: what can be done before the callee is there (a dynamic worker still loading). */
export function checkInternalCall(c: Pick<InternalCall, 'what' | 'caller'>, raw: unknown): ServiceCallInit {
  const init = parseServiceCallInit(raw);
  if (!init) throw new TypeError(`${c.what}: malformed request from worker ${c.caller}`);
  return init;
}

/** internalCall once its request is checked (checkInternalCall). */
export async function sendInternalCall(c: InternalCall, init: ServiceCallInit): Promise<ServiceCallResult> {
  const what = c.what;
  if (init.body && init.body.byteLength > MAX_ACTOR_BODY_BYTES) {
    throw new RangeError(`${what}: the request body of ${init.body.byteLength} bytes is over the ${MAX_ACTOR_BODY_BYTES}-byte limit`);
  }
  const depth = c.depth + 1;
  if (depth > MAX_SERVICE_DEPTH) {
    throw new ServiceDepthError(`${what}: Subrequest depth limit exceeded. This request recursed through Workers too many times (${MAX_SERVICE_DEPTH} service-binding hops).`);
  }
  try {
    c.countSubrequest();
  } catch (err) {
    throw new Error(`${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const send = c.send;
  if (!send) throw new ServiceUnavailableError(`${what}: service bindings are not available on this agent`);
  let res: ServiceResponse;
  try {
    // An RPC goes to the entrypoint the binding names (the shim's workerRpc reads the path).
    const url = init.method === RPC_METHOD ? `${RPC_URL}${c.entrypoint ?? ''}` : init.url;
    res = await withCallbacks(init.method, init.headers, c.invokeLocal, (headers) => send({ url, method: init.method, headers, body: init.body ? new Uint8Array(init.body) : null }, depth));
  } catch (err) {
    if (err instanceof ActorExceptionError) throw err;
    throw new Error(`${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (res.body.byteLength > MAX_ACTOR_BODY_BYTES) {
    throw new RangeError(`${what}: the response body of ${res.body.byteLength} bytes is over the ${MAX_ACTOR_BODY_BYTES}-byte limit`);
  }
  return { status: res.status, statusText: res.statusText, headers: res.headers, body: toArrayBuffer(res.body) };
}
