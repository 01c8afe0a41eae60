import * as z from 'zod';
import { EdgeError } from '../../common/errors.js';

// The boundary between the agent (host) and the Workers API shim inside each isolate.
// Everything that crosses it is a copy of plain data; the only functions the isolate
// ever holds are the narrow host callbacks below, captured in the shim's closure by
// `__edgeInstall` and never reachable from user code.
//
// Life of an isolate:
//  1. The shim bundle (node-agent/shim/, bundled by shim-bundle.ts) runs once at
//     snapshot time. It defines the Web APIs on globalThis and the functions named in
//     SHIM_GLOBALS. It calls no host callback at top level (none exist in a snapshot).
//  2. For each isolate made from the snapshot, before any user code runs, the host takes
//     References to the SHIM_GLOBALS functions and then calls
//     `__edgeInstall(callbacks)` with HostCallbacks (ivm.Callback functions). The shim
//     keeps the callbacks in its closure and deletes every entry point's global, so user
//     code can reach neither the callbacks nor the entry points (the two globals left for
//     modules, MODULE_LOADED_GLOBAL and WORKERS_MODULE_GLOBAL, the load's root takes away
//     before any code of the worker runs).
//  3. The host compiles the worker's ES module and evaluates it under a root module
//     (LOAD_ROOT_SOURCE in common/builtin-modules.ts) that hands its namespace to the
//     shim, then calls `init(null, env, options)` (the `__edgeInit` reference; null: that
//     namespace) with the plain-data env (isolateEnv(WorkerEnv): the ai bindings' server
//     URLs stay on the host). A load a request waits for queues init right behind the
//     evaluation. The shim builds `env` and returns the names of the handlers the default
//     export has (`["fetch"]`, ...), or throws a message saying what is wrong with the
//     module. The platform is not frozen: as on workerd, a worker may patch it.
//  4. Per request: `dispatch(id, request)` returns a Promise of DispatchResponse. A body
//     passed as "stream" is fed with `pushBody(id, chunk)` calls ending with
//     `pushBody(id, null)` (or `cancel(id, reason)` when the client goes away); a response
//     body of "stream" is read with `pullBody(id)` until it resolves with null or 'done'.
//     `settle(id)` resolves once every ctx.waitUntil promise of that request has settled
//     and forgets the request; a response whose `done` is set, or a body that ended with
//     'done', needs none.
//
// Entry points (all take and return copies):
//   __edgeInstall(callbacks: HostCallbacks, memoryMiB: number): void  -- memoryMiB also
//     bounds the isolate's WebAssembly memory (node-agent/shim/web/wasm.js)
//   __edgeInit(namespace: null, env: IsolateEnv, options: InitOptions): string[]
//   __edgeDispatch(id: number, head: string, body: WireBody, entrypoint?: string): void
//     -- called with applyIgnored; answered by the respond callback (DispatchAnswer below),
//     once, with the response or with the exception's text: isolated-vm's promise-returning
//     apply costs the host's thread a stack trace and a promise per call.
//   Every entry point that returns a promise rejects only with a plain Error whose
//   message the shim made inside the isolate (a worker's own error object could have
//   getters that spin, and isolated-vm copies a rejection on the host's thread).
//   The request head and the response travel as strings (encodeRequestHead,
//   decodeResponse below): crossing the boundary as a string costs a fraction of a
//   structured-cloned object, on every request.
//   __edgePushBody(id: number, chunk: ArrayBuffer | null): void
//   __edgePullBody(id: number): Promise<ArrayBuffer | null | 'done'>  -- at the body's end,
//     'done' when nothing of the request is left in the isolate (no waitUntil, no request
//     body still being pushed): the request is over without settle(); null: call settle()
//   __edgeCancel(id: number, reason: string): void
//   __edgeSettle(id: number): Promise<void>
//   __edgeHostSettle(ticket: number, outcome: Settled): void  -- called with applyIgnored:
//     the outcome of the asynchronous host callback that returned `ticket` (HostAsync below)
//   __edgeActor(op: 'construct' | 'alarm' | 'gate' | 'sqlOpen' | 'sqlExport' | 'ws', arg): Promise<{ reset: string | null; error: string | null }>
//     ('ws': an event of a hibernatable WebSocket, HibernationEvent in sockets/hibernation.ts)
//     -- actor isolates only (InitOptions.actor): see node-agent/actor-isolate.ts.
//   __edgeSocketEvent(socket: number, type: 'message' | 'close', data: string | ArrayBuffer | null,
//     code: number, reason: string): Promise<void>  -- an event for the server end of a
//     WebSocketPair whose client end a response handed to the host (see
//     node-agent/isolate-sockets.ts); `socket` is the shim's number for it (the "w<n>"
//     of the response). Resolves once the promises its listeners returned have settled.
//     The host runs it like a request: one at a time, under the same budgets.
//   __edgeRpcLocal(message: string): Promise<string>  -- a call from an RPC callee on a
//     function or RpcTarget this isolate passed as an argument of the RPC call it is waiting
//     on (node-agent/shim/rpc.js); runs beside that call, counted in its budgets.
//   __edgeWarm(step: 'begin' | 'end'): Promise<void>  -- run by the pool (isolate/pool.ts) on a
//     pooled isolate no worker owns yet: 'begin' sends one request through the shim's own
//     handler, so the request path is compiled before a worker's first request, and leaves
//     that handler in place for one more request the pool sends through __edgeDispatch
//     (id -1); 'end' puts everything back: it leaves nothing behind.

export const SHIM_GLOBALS = [
  '__edgeInstall', '__edgeInit', '__edgeDispatch', '__edgePushBody', '__edgePullBody', '__edgeCancel', '__edgeSettle', '__edgeActor',
  '__edgeHostSettle', '__edgeSocketEvent', '__edgeRpcLocal', '__edgeWarm',
] as const;

/**
 * The shim's answer to `__edgeDispatch(id, ...)`, an "ignored" callback installed beside
 * HostCallbacks: `response` and nulls, or null, the exception's text (made in the isolate)
 * and its `[name, message]` as JSON (what a rejection's EXCEPTION_MARK stack carries).
 */
export type DispatchAnswer = (id: number, response: WireResponse | null, error: string | null, exception: string | null) => void;

/** Header list in order, names lower-cased by the sender; duplicates allowed. */
export const HeaderListSchema = z.array(z.tuple([z.string(), z.string()]));

/** ai and actor-call bodies are buffered; this bounds what one may hold (fetch streams instead). */
export const MAX_SUBREQUEST_BODY_BYTES = 32 * 1024 * 1024;

/**
 * A fetch() request body up to this size crosses whole in SubrequestInit.body; a larger one,
 * and any ReadableStream, is streamed with fetchWrite (the shim's fetch.js holds the same
 * number). A response body up to this size whose length the server declared crosses whole;
 * any other is streamed with fetchRead.
 */
export const SUBREQUEST_WHOLE_BODY_BYTES = 256 * 1024;

export type ActorIdKind = 'name' | 'unique' | 'string';

/**
 * The method of the runtime's internal RPC request (node-agent/shim/rpc.js): not an HTTP
 * token, so no client and no worker's Request can carry it.
 */
export const RPC_METHOD = 'EDGE:RPC';
/**
 * Header of an RPC request whose arguments hold functions or RpcTargets: the shim sets it
 * to "1", the caller's host replaces it with the token rpcCallback calls name. RPC
 * requests are made by the runtime only (RPC_METHOD), so a client cannot set it.
 */
export const RPC_CALLBACK_HEADER = 'x-edge-rpc-callbacks';
/** An RPC request's URL; for a service binding the host puts the entrypoint's name in its path. */
export const RPC_URL = 'https://rpc.internal/';

/** What the actorId callback returns to the isolate. */
export interface ActorIdRecord {
  id: string;
  name?: string;
}

/**
 * A stub.fetch() request body of bytes (a string, a BufferSource...) up to this size
 * crosses whole in ActorFetchInit.body, as before bodies streamed: a whole body can be
 * sent again, so a call the ring must route again (421, an owner that never took it) is
 * retried. A larger one, and any ReadableStream, is streamed with actorWrite (the shim's
 * actor-fetch.js holds the same number).
 */
export const ACTOR_WHOLE_BODY_BYTES = 32 * 1024 * 1024;

/** The shim's number for an actor call (actorWrite/actorRead/actorCancel name it by this). */
export const ActorCallIdSchema = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);

/** stub.fetch()'s request as the isolate passes it. */
export const ActorFetchInitSchema = z.object({
  id: ActorCallIdSchema,
  url: z.string().max(64 * 1024),
  method: z.string().min(1).max(64),
  headers: HeaderListSchema,
  /** null, the whole body (at most ACTOR_WHOLE_BODY_BYTES), or 1: streamed with actorWrite. */
  body: z.union([z.instanceof(ArrayBuffer).refine((b) => b.byteLength <= ACTOR_WHOLE_BODY_BYTES, 'a whole body this large must be streamed'), z.literal(1)]).nullable(),
});
export type ActorFetchInit = z.infer<typeof ActorFetchInitSchema>;

/** A service binding's request as the isolate passes it (bodies whole: at most ACTOR_WHOLE_BODY_BYTES). */
export const ServiceCallInitSchema = z.object({
  url: z.string().max(64 * 1024),
  method: z.string().min(1).max(64),
  headers: HeaderListSchema,
  body: z.instanceof(ArrayBuffer).refine((b) => b.byteLength <= ACTOR_WHOLE_BODY_BYTES, 'a service binding\'s request body is at most 32 MiB').nullable(),
});
export type ServiceCallInit = z.infer<typeof ServiceCallInitSchema>;

/** The url, method and headers of an internal request, checked as the schemas above check them; null: malformed. */
function parseRequestHead(raw: Record<string, unknown>): { url: string; method: string; headers: [string, string][] } | null {
  const { url, method, headers } = raw;
  if (typeof url !== 'string' || url.length > 64 * 1024) return null;
  if (typeof method !== 'string' || method.length === 0 || method.length > 64) return null;
  if (!Array.isArray(headers)) return null;
  const list: [string, string][] = [];
  for (const h of headers as unknown[]) {
    if (!Array.isArray(h) || h.length !== 2 || typeof h[0] !== 'string' || typeof h[1] !== 'string') return null;
    list.push([h[0], h[1]]);
  }
  return { url, method, headers: list };
}

const isWholeBody = (body: unknown): body is ArrayBuffer => body instanceof ArrayBuffer && body.byteLength <= ACTOR_WHOLE_BODY_BYTES;

/**
 * ServiceCallInitSchema's check, written out: every service-binding and dynamic-worker call
 * runs it on its path (zod's parse ~0.1 ms with cold caches, this a few us);
 * test/unit/bridge-parsers.test.ts holds the two to the same verdict. Null: malformed.
 */
export function parseServiceCallInit(raw: unknown): ServiceCallInit | null {
  if (!isRecord(raw)) return null;
  const head = parseRequestHead(raw);
  const { body } = raw;
  if (!head || (body !== null && !isWholeBody(body))) return null;
  return { ...head, body };
}

/**
 * ActorFetchInitSchema's check, written out, for the same reason: every stub.fetch() runs
 * it (zod's parse was ~2 % of an isolate host's main thread per actor call);
 * test/unit/bridge-parsers.test.ts holds the two to the same verdict. Null: malformed.
 */
export function parseActorFetchInit(raw: unknown): ActorFetchInit | null {
  if (!isRecord(raw)) return null;
  const head = parseRequestHead(raw);
  const { id, body } = raw;
  if (!head || typeof id !== 'number' || !Number.isSafeInteger(id) || id < 1) return null;
  if (body !== null && body !== 1 && !isWholeBody(body)) return null;
  return { id, ...head, body };
}

/** What serviceCall settles with: the bound worker's response, body whole. */
export interface ServiceCallResult {
  status: number;
  statusText: string;
  headers: [string, string][];
  body: ArrayBuffer;
}

/** A host-side CryptoKey as the isolate sees it (its CryptoKey object's slots). */
export interface CryptoKeyInfo {
  id: number;
  type: string;
  extractable: boolean;
  algorithm: Record<string, unknown>;
  usages: string[];
}

/**
 * How a crypto call settles: `v` the result (`{ key }` / `{ pair }` for keys, an
 * ArrayBuffer, a boolean, a JWK), or `e`, the [DOMException name (or "TypeError"), message].
 */
export type CryptoOutcome = { v: unknown } | { e: [string, string] };

/** What actorFetch settles with (like SubrequestResult, without url/redirected). */
export interface ActorFetchResult {
  status: number;
  statusText: string;
  headers: [string, string][];
  /** The whole body, or "stream": read it with actorRead(id). */
  body: ArrayBuffer | 'stream';
  webSocket?: number;
}

/** What the isolate may ask the host for. All synchronous unless noted. */
export interface HostCallbacks {
  /** console.* output: level is log|info|warn|error|debug; message already formatted. */
  log(level: string, message: string): void;
  /** n cryptographically random bytes (n <= 65536, as getRandomValues allows). */
  randomBytes(n: number): ArrayBuffer;
  /** WHATWG URL parsing by the host's URL implementation; null when invalid. */
  parseURL(input: string, base?: string): UrlRecord | null;
  /** Applies a URL setter (`pathname`, `search`, `host`...) and returns the new record. */
  setURL(href: string, property: string, value: string): UrlRecord;
  /** SHA-1/256/384/512 digest (algorithm named as WebCrypto does, e.g. "SHA-256"). */
  digest(algorithm: string, data: ArrayBuffer): ArrayBuffer;
  /**
   * Async: one crypto.subtle operation (or DigestStream step) run by the host's webcrypto
   * (bindings/host-crypto.ts). `args` are the method's arguments with each CryptoKey
   * written `{ $edgeKey: id }`, an id of this isolate's own key table.
   */
  crypto(op: string, args: unknown[]): HostAsync<CryptoOutcome>;
  /** A CryptoKey the isolate's garbage collector found unreferenced: the host drops it. */
  cryptoRelease(id: number): void;
  /**
   * Async: settles with true after `ms` milliseconds (setTimeout/setInterval are built on
   * it), or with false once timerCancel(id) is called or the isolate is disposed. `id` is
   * the shim's number for the timer, unique in the isolate. Throws a RangeError when the
   * isolate already holds MAX_PENDING_TIMERS (bindings/host-timers.ts) pending timers.
   */
  sleep(ms: number, id: number): HostAsync<boolean>;
  /** clearTimeout/clearInterval: the host drops the timer at once. */
  timerCancel(id: number): void;
  /**
   * A subrequest (the isolate's `fetch`), performed by the host, counted against
   * limits.subrequests and checked against the worker's egress policy on every connection
   * (each redirect hop included). `request.id` is the shim's number for it, unique in the
   * isolate, naming it in the calls below. Async: settles with the status and headers once
   * they arrive (body: whole, null, or "stream": read it with fetchRead), or with an error
   * message when refused (naming the destination and the policy) or failed.
   */
  fetch(request: SubrequestInit): HostAsync<SubrequestResult>;
  /**
   * The next chunk of a subrequest's streamed request body (SubrequestInit.body === 1), or
   * null for its end. Async: settles once the host can take more (backpressure), or with
   * an error when the subrequest is over.
   */
  fetchWrite(id: number, chunk: ArrayBuffer | null): HostAsync<void>;
  /** Async: the next bytes of a streamed response body, or null at its end (the subrequest is then forgotten). */
  fetchRead(id: number): HostAsync<ArrayBuffer | null>;
  /** The worker is done with the subrequest (aborted, body cancelled): the host drops its connection. */
  fetchCancel(id: number, reason: string): void;
  /**
   * env.<binding>.run(model, inputs) of an `ai` binding (see node-agent/ai-binding.ts),
   * counted against limits.subrequests. `inputsJson` is the worker's inputs as JSON
   * (Workers AI text-generation shape). Async: settles with the whole answer, or for
   * `stream: true` with a handle once the model server has answered 2xx, read with
   * aiRead; or with an error message naming the binding (never the server's address).
   */
  aiRun(binding: string, model: string, inputsJson: string): HostAsync<AiRunResult>;
  /** Async: the next bytes of a streamed answer in Cloudflare's SSE format, or null at the end (the handle is then freed). */
  aiRead(handle: number): HostAsync<ArrayBuffer | null>;
  /** The worker cancelled a streamed answer: the host aborts the upstream request and frees the handle. */
  aiCancel(handle: number): void;
  /**
   * env.<actor binding>.idFromName(value) / newUniqueId() / idFromString(value), and the
   * check get(id) makes for an id made by another binding: the id (and the name for
   * 'name'), or a TypeError when the id is not one of the binding's namespace. The
   * DurableActor's uid stays on the host (node-agent/actor-binding.ts).
   */
  actorId(binding: string, kind: ActorIdKind, value: string | null): ActorIdRecord;
  /**
   * stub.fetch() of an actor binding, counted against limits.subrequests; `name` is the
   * id's name when it was made by idFromName (checked by the host). Async: settles with the
   * response head of the actor once its writes are committed (its body whole, or streamed
   * with actorRead), or an error message naming the binding.
   */
  actorFetch(binding: string, id: string, name: string | null, request: ActorFetchInit): HostAsync<ActorFetchResult>;
  /**
   * A service binding's call (env.<binding>.fetch() or an RPC method, see
   * node-agent/bindings/service-binding.ts): `request` is the fetch's request, or for an
   * RPC the runtime's internal request (method RPC_METHOD, the call as its body). Counted
   * against limits.subrequests and bounded in depth (MAX_SERVICE_DEPTH). Async: settles
   * with the bound worker's buffered response, or an error naming the binding.
   */
  serviceCall(binding: string, request: ServiceCallInit): HostAsync<ServiceCallResult>;
  /**
   * An RPC callee calls a function or RpcTarget its caller passed as an argument:
   * `token` names the caller's call in flight (RPC_CALLBACK_HEADER of the request), the
   * message is rpc.js's. Async: settles with the answer's text, or an error (the
   * function's exception, or: the call is over, or the caller is on another agent).
   */
  rpcCallback(token: string, message: string): HostAsync<string>;
  /**
   * The next chunk of an actor call's streamed request body (ActorFetchInit.body === 1),
   * or null for its end. Async: settles once the host can take more (the actor reads it as
   * it arrives: backpressure), or with an error once the actor's request is over.
   */
  actorWrite(id: number, chunk: ArrayBuffer | null): HostAsync<void>;
  /** Async: the next bytes of the actor's streamed response body, or null at its end. */
  actorRead(id: number): HostAsync<ArrayBuffer | null>;
  /** The caller is done with the call (body cancelled, request aborted): the actor's stream is cancelled. */
  actorCancel(id: number, reason: string): void;
  /**
   * The request handler wants more of its streamed request body (the body stream's
   * pull()): a host that feeds the body on demand sends the next chunk. Answered by the
   * isolate core itself (WorkerIsolate), not by the bindings.
   */
  bodyDemand(id: number): void;
  /**
   * HTMLRewriter (shim/html-rewriter.js), answered by the isolate core itself: 'module',
   * the first time the isolate uses it, gives lol-html's wasm module compiled by the host
   * (once per process and memory maximum) with a memory maximum of `pages`, within the
   * worker's budget; 'exhausted' / 'crashed' say its instance trapped (its memory reached
   * that maximum, or a crash), and the host retires the isolate after this turn.
   */
  htmlRewriter(op: 'module' | 'exhausted' | 'crashed', pages?: number): object | undefined;
  /**
   * One of the shim's libraries kept out of the snapshot (SHIM_LIBS in
   * isolate/shim-bundle.ts), answered by the isolate core: a function made in the
   * isolate's context, (module, exports, require, __dirname), that evaluates it there.
   */
  lib(name: string): unknown;
  /** state.storage of an actor (in memory on the host): see storageCall in node-agent/actor-storage.ts. */
  storage(op: string, a?: unknown, b?: unknown): unknown;
  /**
   * A message sent on the server end of a WebSocketPair whose client end the host holds
   * (`socket`: the shim's number for it): text as a string, binary as an ArrayBuffer.
   * Throws when it is over the agent's message size limit, or when the isolate's sockets
   * already hold as many bytes for slow clients as it may. Answers false when the socket
   * no longer carries messages (the host closed it for its backlog): later sends on it
   * are dropped.
   */
  socketSend(socket: number, data: string | ArrayBuffer): boolean;
  /** That server end closed (or answered the client's close). */
  socketClose(socket: number, code: number, reason: string): void;
  /**
   * An actor's hibernatable WebSockets (state.acceptWebSocket() and the rest of the
   * Hibernation API, node-agent/shim/hibernation.js): `op` is accept, list, tags, send,
   * close, attach, attachment, autoSet, autoGet, autoTime, timeoutSet or timeoutGet; the
   * host side is HibernationCalls (bindings/host-callbacks.ts), which checks every argument.
   * Throws, in a worker isolate, that the API is for actors.
   */
  hibernation(op: string, a?: unknown, b?: unknown, c?: unknown): unknown;
  /**
   * env.<loader>.get(id): the host's number for the warm dynamic worker `id` of this
   * worker's Worker Loader `binding` on this agent, or null when none is warm (the shim then
   * calls the WorkerCode callback and loaderLoad). See node-agent/bindings/worker-loader.ts.
   */
  loaderGet(binding: string, id: string): number | null;
  /**
   * Async: starts a dynamic worker from `code` (LoaderCodeSchema) under `id` (null: load(),
   * one-off, gone when the caller's request ends) and settles with its number, or with the
   * error that it does not load (compile errors, startup limits) or is refused. `ticket`
   * (a load()'s, a positive integer new to the request): loaderCall may name the load by
   * -ticket before it settles, so the stub's first call does not wait for the load's answer
   * to come back into the isolate first (the host runs it once the load is done).
   */
  loaderLoad(binding: string, id: string | null, code: unknown, ticket?: number): HostAsync<number>;
  /**
   * Async: a call to a dynamic worker's entrypoint (null: its default export), as a service
   * binding's call is (fetch(), or an RPC's internal request): counted, bounded in depth,
   * and settled with its buffered response or its exception. `warm`: a get(id)'s call by
   * the number it had: settles with null, sending and counting nothing, when that worker
   * is no longer the warm one of its id (the shim then asks loaderGet again). `handle`: the
   * number loaderLoad settled with, or -ticket for a load() of this request (then it fails
   * with the load's own error when it did not load).
   */
  loaderCall(handle: number, entrypoint: string | null, request: ServiceCallInit, warm: boolean): HostAsync<ServiceCallResult | null>;
}

/** WorkerCode as the shim hands it to loaderLoad (node-agent/shim/loader.js). */
export const LoaderCodeSchema = z.object({
  compatibilityDate: z.string().max(64),
  compatibilityFlags: z.array(z.string().max(128)).max(64),
  mainModule: z.string().min(1).max(512),
  modules: z.record(z.string(), z.tuple([z.enum(['js', 'cjs', 'text', 'data', 'json', 'wasm']), z.union([z.string(), z.instanceof(ArrayBuffer)])])),
  /** env's plain values, rpc.js-encoded. */
  values: z.string(),
  /** env name -> the caller's binding passed as a capability. */
  caps: z.record(z.string(), z.string()),
  /** env name -> [the caller's id for a function or RpcTarget it lent (rpc.js lendToEnv), is it a function]. */
  refs: z.record(z.string(), z.tuple([z.number().int().min(1), z.boolean()])),
  /** 'default' | 'block' | 'service:<the caller's service binding>' */
  outbound: z.string().max(256),
  limits: z.object({ cpuMs: z.number().positive().optional(), subRequests: z.number().positive().optional(), memoryMiB: z.number().positive().optional() }),
});
export type LoaderCode = z.infer<typeof LoaderCodeSchema>;

const MODULE_TYPES: ReadonlySet<string> = new Set(['js', 'cjs', 'text', 'data', 'json', 'wasm']);
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isText = (v: unknown, max = Infinity): v is string => typeof v === 'string' && v.length <= max;
const isPositive = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;

/**
 * LoaderCodeSchema's check, written out: every load() runs it on its path, where zod's parse
 * took ~0.15 ms of a ~2 ms load once the previous load had left the caches cold (this:
 * ~0.02). test/unit/bridge-parsers.test.ts holds the two to the same verdict on every field.
 * Unknown keys are dropped, as zod's object does.
 */
export function parseLoaderCode(raw: unknown): { ok: true; data: LoaderCode } | { ok: false; error: string } {
  const fail = (path: string, what: string) => ({ ok: false as const, error: `${path}: ${what}` });
  if (!isRecord(raw)) return fail('(root)', 'expected an object');
  const { compatibilityDate, compatibilityFlags, mainModule, modules, values, caps, refs, outbound, limits } = raw;
  if (!isText(compatibilityDate, 64)) return fail('compatibilityDate', 'expected a string of at most 64 characters');
  if (!Array.isArray(compatibilityFlags) || compatibilityFlags.length > 64) return fail('compatibilityFlags', 'expected an array of at most 64 strings');
  for (const [i, f] of compatibilityFlags.entries()) if (!isText(f, 128)) return fail(`compatibilityFlags.${i}`, 'expected a string of at most 128 characters');
  if (!isText(mainModule, 512) || mainModule.length === 0) return fail('mainModule', 'expected a string of 1 to 512 characters');
  if (!isRecord(modules)) return fail('modules', 'expected an object');
  const mods: LoaderCode['modules'] = {};
  for (const [name, m] of Object.entries(modules)) {
    if (!Array.isArray(m) || m.length !== 2) return fail(`modules.${name}`, 'expected [type, content]');
    const [type, content] = m as unknown[];
    if (typeof type !== 'string' || !MODULE_TYPES.has(type)) return fail(`modules.${name}.0`, `expected one of ${[...MODULE_TYPES].join(', ')}`);
    if (typeof content !== 'string' && !(content instanceof ArrayBuffer)) return fail(`modules.${name}.1`, 'expected a string or an ArrayBuffer');
    mods[name] = [type as LoaderCode['modules'][string][0], content];
  }
  if (!isText(values)) return fail('values', 'expected a string');
  if (!isRecord(caps)) return fail('caps', 'expected an object');
  for (const [name, binding] of Object.entries(caps)) if (typeof binding !== 'string') return fail(`caps.${name}`, 'expected a string');
  if (!isRecord(refs)) return fail('refs', 'expected an object');
  const refsOut: LoaderCode['refs'] = {};
  for (const [name, r] of Object.entries(refs)) {
    if (!Array.isArray(r) || r.length !== 2 || !Number.isSafeInteger(r[0]) || (r[0] as number) < 1 || typeof r[1] !== 'boolean') return fail(`refs.${name}`, 'expected [an integer of 1 or more, a boolean]');
    refsOut[name] = [r[0] as number, r[1]];
  }
  if (!isText(outbound, 256)) return fail('outbound', 'expected a string of at most 256 characters');
  if (!isRecord(limits)) return fail('limits', 'expected an object');
  const limitsOut: LoaderCode['limits'] = {};
  for (const k of ['cpuMs', 'subRequests', 'memoryMiB'] as const) {
    const v = limits[k];
    if (v === undefined) continue;
    if (!isPositive(v)) return fail(`limits.${k}`, 'expected a positive number');
    limitsOut[k] = v;
  }
  return {
    ok: true,
    data: { compatibilityDate, compatibilityFlags: [...compatibilityFlags] as string[], mainModule, modules: mods, values, caps: { ...caps } as Record<string, string>, refs: refsOut, outbound, limits: limitsOut },
  };
}

export interface AiUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** A tool call in Workers AI's output shape: the OpenAI fields and the legacy {name, arguments} together. */
export interface AiToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
  name: string;
  /** The arguments parsed (the string when they are not JSON). */
  arguments: unknown;
}

/**
 * What aiRun settles with: a text-generation answer (whole, or a stream handle for
 * aiRead/aiCancel), text embeddings, or the bytes of a generated image.
 */
export type AiRunResult =
  | { kind: 'whole'; response: string; usage?: AiUsage; tool_calls?: AiToolCall[] }
  | { kind: 'stream'; handle: number }
  | { kind: 'embeddings'; shape: [number, number]; data: number[][] }
  | { kind: 'image'; body: ArrayBuffer };

/** The task types of the model catalogue (EdgeModel spec.task) that env.AI.run implements. */
export type AiTask = 'text-generation' | 'text-embeddings' | 'text-to-image';

/** aiRun's arguments as the isolate passes them. */
export const AiRunArgsSchema = z.tuple([z.string().min(1).max(256), z.string().max(1024), z.string()]);
export const AiHandleSchema = z.number().int().min(1);

/**
 * How an asynchronous host callback answers: it starts the work and returns a ticket, a
 * number unique in the isolate; when the work settles, the host calls
 * `__edgeHostSettle(ticket, outcome)` with applyIgnored, and the shim's hostOutcome
 * (shim/web/util.js) resolves the promise it keeps for that ticket. The outcome never
 * rejects (an error travels as `{ ok: false }`), so nothing on the host is left with an
 * unhandled rejection. Until 2026-12-05 the callback returned an ivm.Reference to a
 * function giving a promise, which the shim applied with a promise result and released:
 * three crossings of the boundary instead of two, and a weakly held handle on each side
 * whose clean-up lengthened every garbage collection of the host (docs/agent.md,
 * "Asynchronous host calls answer by ticket").
 */
export type HostAsync<_T> = number;
/** `exception`: an exception an actor's code threw, which the shim rethrows as itself (ActorExceptionError). */
export type Settled<T> = { ok: true; value: T } | { ok: false; error: string; exception?: ActorException };

/**
 * An exception thrown by a DurableActor's code, as the caller's stub.fetch() rethrows it
 * (as on Workers: https://developers.cloudflare.com/durable-objects/best-practices/error-handling/,
 * "uncaught exceptions thrown by a Durable Object ... propagated to the callsite", with
 * `.remote` true). Name and message only: the stack stays in the owner's log.
 */
export interface ActorException { name: string; message: string }

/** Bounds on an ActorException (a name longer than this is cut; a message too). */
export const MAX_EXCEPTION_NAME = 128;
export const MAX_EXCEPTION_MESSAGE = 4096;

/** An ActorException read from anywhere (a peer's header, the isolate): cut to the bounds, strings only. */
export function actorException(name: unknown, message: unknown): ActorException {
  return {
    name: (typeof name === 'string' && name !== '' ? name : 'Error').slice(0, MAX_EXCEPTION_NAME),
    message: (typeof message === 'string' ? message : '').slice(0, MAX_EXCEPTION_MESSAGE),
  };
}

/**
 * A request's rejection from the shim (__edgeDispatch) carries its exception's name and
 * message in the error's stack, after this mark, as a JSON [name, message] (the shim's
 * EXCEPTION_MARK: isolated-vm copies an error's message and stack only).
 */
export const EXCEPTION_MARK = '\u0000edge-exception:';

/** The exception a dispatch rejection carries, if it carries one. */
export function exceptionFromRejection(err: unknown): ActorException | undefined {
  const stack = err instanceof Error ? err.stack : undefined;
  if (typeof stack !== 'string' || !stack.startsWith(EXCEPTION_MARK)) return undefined;
  try {
    const v: unknown = JSON.parse(stack.slice(EXCEPTION_MARK.length));
    return Array.isArray(v) ? actorException(v[0], v[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Rejects a stub.fetch() whose actor threw (wherever the actor lives). `message` is the
 * actor's own; `context` (not for clients) says which actor; the stack, if any, is the
 * owner's log's. Not retried: the actor's code ran.
 */
export class ActorExceptionError extends EdgeError {
  constructor(readonly exception: ActorException, actor: string, options?: ErrorOptions) {
    super(`actor ${actor} threw ${exception.name}: ${exception.message}`, { ...options, context: { actor } });
  }
}

export const UrlRecordSchema = z.object({
  href: z.string(), origin: z.string(), protocol: z.string(), username: z.string(), password: z.string(),
  host: z.string(), hostname: z.string(), port: z.string(), pathname: z.string(), search: z.string(), hash: z.string(),
});
export type UrlRecord = z.infer<typeof UrlRecordSchema>;

/** The shim's number for a subrequest (fetchWrite/fetchRead/fetchCancel name it by this). */
export const SubrequestIdSchema = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);

export const SubrequestInitSchema = z.object({
  id: SubrequestIdSchema,
  url: z.string().max(64 * 1024),
  method: z.string().min(1).max(64),
  headers: HeaderListSchema,
  /** null, the whole body (at most SUBREQUEST_WHOLE_BODY_BYTES), or 1: streamed with fetchWrite. */
  body: z.union([z.instanceof(ArrayBuffer).refine((b) => b.byteLength <= SUBREQUEST_WHOLE_BODY_BYTES, 'a whole body this large must be streamed'), z.literal(1)]).nullable(),
  redirect: z.enum(['follow', 'manual', 'error']).default('follow'),
});
export type SubrequestInit = z.infer<typeof SubrequestInitSchema>;

export interface SubrequestResult {
  status: number;
  statusText: string;
  headers: [string, string][];
  url: string;
  redirected: boolean;
  /** The whole body, none, or "stream": read it with fetchRead(id). */
  body: ArrayBuffer | null | 'stream';
}

/** env as plain data; the shim turns it into the `env` object the handler sees. */
export interface WorkerEnv {
  /** vars and resolved secrets: env.NAME is a string. */
  text: Record<string, string>;
  /**
   * ai bindings: binding name -> the model its server serves and the base URL of the
   * region's OpenAI-compatible model server (e.g. `http://ai-x.ns.svc.cluster.local:8000`).
   * Host-side only: the isolate gets isolateEnv(env), which holds the model, never the URL.
   */
  ai?: Record<string, AiBindingEnv>;
  /**
   * actor namespace bindings: binding name -> the DurableActor (Kubernetes namespace,
   * name) and its metadata.uid, the key its ids are made with. Host-side only: the
   * isolate gets the binding names.
   */
  actors?: Record<string, { namespace: string; actor: string; uid: string }>;
  /** service bindings: binding name -> an EdgeWorker of the same namespace (and entrypoint). The isolate gets the names. */
  services?: Record<string, { namespace: string; worker: string; entrypoint?: string }>;
  /** Worker Loader bindings (names): env.<name>.load() / get() run dynamic workers on this agent (bindings/worker-loader.ts). */
  loaders?: string[];
  /**
   * A dynamic worker's plain env values (WorkerCode.env less its capabilities), as rpc.js
   * encodes them (structured-clone semantics); the shim decodes them into env.
   */
  values?: string;
  /**
   * A dynamic worker's globalOutbound: 'block' (fetch() throws) or the name of a service
   * binding in `services` that receives every fetch() instead; absent: the egress policy.
   * The binding named here is not in the dynamic worker's env.
   */
  outbound?: string;
  /**
   * A dynamic worker's functions and RpcTargets of its caller (WorkerCode.env): env name ->
   * [the caller's id for it, is it a function], called back through rpcCallback with `token`
   * (bindings/rpc-callbacks.ts), which runs the call in the caller's isolate.
   */
  refs?: { token: string; stubs: Record<string, [number, boolean]> };
}

/**
 * One ai binding as the host sees it: its first model (`model`, `url`, `task`; task unset:
 * text-generation) and the other catalogue models it may call, each at this region's server.
 */
export interface AiBindingEnv {
  model: string;
  url: string;
  task?: AiTask;
  models?: Record<string, { url: string; task: AiTask }>;
}

/** What `__edgeInit` receives: the WorkerEnv less what the worker must not see (ai server URLs). */
export interface IsolateEnv {
  text: Record<string, string>;
  ai: Record<string, { model: string }>;
  /** actor binding names */
  actors: string[];
  /** service binding names */
  services: string[];
  /** Worker Loader binding names */
  loaders: string[];
  /** WorkerEnv.values */
  values: string | null;
  /** WorkerEnv.outbound */
  outbound: string | null;
  /** WorkerEnv.refs */
  refs: WorkerEnv['refs'] | null;
}

export function isolateEnv(env: WorkerEnv): IsolateEnv {
  const ai: Record<string, { model: string }> = {};
  for (const [name, b] of Object.entries(env.ai ?? {})) ai[name] = { model: b.model };
  return {
    text: env.text, ai, actors: Object.keys(env.actors ?? {}), services: Object.keys(env.services ?? {}),
    loaders: env.loaders ?? [], values: env.values ?? null, outbound: env.outbound ?? null, refs: env.refs ?? null,
  };
}

export interface InitOptions {
  workerName: string;
  /** Set for an actor isolate: the exported class to instantiate and the actor's id. */
  actor?: ActorInitOptions;
}

export interface ActorInitOptions {
  className: string;
  /** 64 hex */
  id: string;
  /** The name the id was made from, when known (state.id.name). */
  name?: string;
  /** How long a blockConcurrencyWhile callback may run before the actor is reset. */
  blockTimeoutMs: number;
  /** A SQLite-backed class (DurableActor spec.storage.backend: sqlite): see node-agent/shim/sql.js. */
  sqlite?: boolean;
}

/** What `__edgeDispatch` receives for one request. */
export interface DispatchRequest {
  url: string;
  method: string;
  headers: [string, string][];
  /**
   * The body: null when there is none, the bytes when the host passes it whole, or
   * "stream" when the host will feed it with pushBody(chunk) calls and a final
   * pushBody(null). (On the wire, see wireBody: a small body crosses as a latin1 string,
   * a large one as an ArrayBuffer, a stream as the number 1.)
   */
  body: ArrayBuffer | Uint8Array | null | 'stream';
  /** Client address, exposed as the CF-Connecting-IP header like Workers does. */
  clientAddress?: string;
  /** request.cf: what the agent knows of the request (see RequestCf); none for internal calls. */
  cf?: RequestCf;
  /**
   * How many service-binding hops led to this request (0: it came from a client). The
   * isolate's own service calls are one deeper; past MAX_SERVICE_DEPTH they are refused.
   */
  depth?: number;
  /** A service binding's fetch() to a named entrypoint: the export (extending WorkerEntrypoint) whose fetch() handles it. */
  entrypoint?: string;
}

/**
 * What the `__edgeDispatch` promise resolves with. `body` is null (no body), an
 * ArrayBuffer (the whole body, when the response was built from a string, buffer or
 * FormData-free source the shim already holds), or "stream": the host then calls
 * `pullBody(id)` until it resolves with null. A handler that throws or returns a
 * non-Response rejects the promise with an Error whose message says so.
 */
export interface DispatchResponse {
  status: number;
  statusText: string;
  headers: [string, string][];
  body: ArrayBuffer | null | 'stream';
  /**
   * True when the request is over inside the isolate (no streamed body, no waitUntil
   * work): the host may skip settle(id).
   */
  done?: boolean;
  /**
   * A 101 answer to a WebSocket upgrade: the SocketRegistry id of the client end of the
   * worker's WebSocketPair (a HostSocket; see node-agent/sockets.ts). decodeResponse
   * yields the shim's own number; WorkerIsolate turns it into the registry id.
   */
  webSocket?: number;
}

/** What the shim returns per request: see encodeResponse in node-agent/shim/index.js. */
export type WireResponse = string | { head: string; body: ArrayBuffer };

/**
 * A client request's request.cf, as far as the agent knows it: `colo` (the agent's region),
 * `httpProtocol`, and the client's location when a trusted proxy stated it (GEO_HEADERS in
 * serving/trusted-proxy.ts). No tlsVersion/tlsCipher (TLS ends before the agent) and no asn.
 */
export type RequestCf = Record<string, string>;

/**
 * "method\nurl\nclientAddress\ncf(\nname\nvalue)*": HTTP allows no newline in any of them;
 * cf is JSON (which escapes newlines) or empty.
 */
export function encodeRequestHead(req: DispatchRequest): string {
  let head = `${req.method}\n${req.url}\n${req.clientAddress ?? ''}\n${req.cf ? JSON.stringify(req.cf) : ''}`;
  for (const [k, v] of req.headers) {
    if (k.includes('\n') || v.includes('\n')) throw new TypeError(`header ${JSON.stringify(k)} contains a newline`);
    head += `\n${k}\n${v}`;
  }
  return head;
}

/** Inverse of the shim's encodeResponse. */
export function decodeResponse(wire: WireResponse): DispatchResponse {
  const text = typeof wire === 'string' ? wire : wire.head;
  let pos = 0;
  const next = () => {
    const end = text.indexOf('\n', pos);
    if (end < 0) throw new Error('malformed response from the shim');
    const field = text.slice(pos, end);
    pos = end + 1;
    return field;
  };
  const status = Number(next());
  const statusText = next();
  const done = next() === '1';
  const kind = next();
  const count = Number(next());
  const headers: [string, string][] = [];
  for (let i = 0; i < count; i++) headers.push([next(), next()]);
  let body: ArrayBuffer | null | 'stream';
  if (kind.charCodeAt(0) === 119 /* w<socket>: a 101 with a WebSocket, no body */) {
    return { status, statusText, headers, body: null, done, webSocket: Number(kind.slice(1)) };
  }
  if (kind === 'n') body = null;
  else if (kind === 's') body = 'stream';
  else if (kind === 'a' && typeof wire !== 'string') body = wire.body;
  else if (kind === 'u') {
    // Text: UTF-8 as the Encoding standard does it (lone surrogates become U+FFFD).
    const buf = Buffer.from(text.slice(pos), 'utf8');
    body = buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength ? buf.buffer as ArrayBuffer : buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
  } else if (kind === 'b') {
    const rest = text.length - pos;
    const buf = Buffer.allocUnsafeSlow(rest);
    buf.write(text.slice(pos), 'latin1');
    body = buf.buffer as ArrayBuffer;
  } else throw new Error(`malformed response from the shim: body kind ${kind}`);
  return { status, statusText, headers, body, done };
}

/** Body on the wire: null, a latin1 string (one char per byte), an ArrayBuffer, or 1 for "streamed". */
export type WireBody = null | string | ArrayBuffer | 1;
export const WIRE_STREAM = 1;
/** Bodies up to this size cross as latin1 strings: one cheap string copy, no structured clone. */
const LATIN1_BODY_BYTES = 64 * 1024;

export function wireBody(body: DispatchRequest['body']): WireBody {
  if (body === null) return null;
  if (body === 'stream') return WIRE_STREAM;
  const bytes = body instanceof Uint8Array ? body : new Uint8Array(body);
  if (bytes.byteLength <= LATIN1_BODY_BYTES) return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}
