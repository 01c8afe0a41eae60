// The Workers runtime inside each isolate: the entry points the host calls (see
// node-agent/bridge.ts for the protocol) on top of the Web APIs in ./web/.
// This file runs at snapshot time: it must not call a host callback at top level.
import { setHost, host } from './host.js';
import { installWebApis, abortRequest, bodyOf, bodyReader, fedStream, makeRequest, responseParts } from './web/index.js';
import { DOMException, settleHost } from './web/util.js';
import { aiBinding } from './ai.js';
import { actorNamespace, actorInit, actorEvent } from './durable.js';
import { takeResponseSocket } from './web/response.js';
import { socketEvent } from './web/websocket.js';
import { installWasmLimits } from './web/wasm.js';
import { installWorkersModule, setWorkersEnv, setWorkersWaitUntil, isEntrypointClass } from './workers-module.js';
import { RPC_CALLBACK_HEADER, RPC_METHOD, rpcInvoke, rpcLocal, encode } from './rpc.js';
import { serviceBinding } from './service.js';
import { warmHtmlRewriter } from './html-rewriter.js';
import { loaderBinding, registerBinding, registerServiceBinding, envValues, envRefs } from './loader.js';

const g = globalThis;
installWebApis(g);
// The cloudflare:workers module's exports, taken away by the load's root module (WORKERS_MODULE_GLOBAL in common/builtin-modules.ts).
installWorkersModule(g, '__edgeCloudflareWorkers');

// Captured before any user code runs, so a worker replacing globals cannot change how
// its own requests are dispatched.
const ResponseCtor = g.Response;
const encoder = new g.TextEncoder();
const decoder = new g.TextDecoder();
const UInt8 = Uint8Array;
const freeze = Object.freeze;
const defineProperty = Object.defineProperty;
const PromiseCtor = Promise;
const allSettled = Promise.allSettled.bind(Promise);
// A worker may replace Array.prototype.push; the runtime must not depend on it.
const arrayPush = Array.prototype.push;
const push = (list, item) => Reflect.apply(arrayPush, list, [item]);
const noop = () => {};

const ENTRY_POINTS = ['__edgeInstall', '__edgeInit', '__edgeDispatch', '__edgePushBody', '__edgePullBody', '__edgeCancel', '__edgeSettle'];
ENTRY_POINTS[ENTRY_POINTS.length] = '__edgeSocketEvent';

let workerName = '(uninitialized)';
/** init finished (the env built): a request queued behind an init that failed runs nothing. */
let initialized = false;
let entry = null;
/** Where RPC calls go (rpc.js): the actor instance, or the default WorkerEntrypoint; null: none. */
let rpcEntry = null;
/** The worker module's namespace object (named entrypoints are looked up in it). */
let exportsOf = null;
let env = null;
/** Per request: the request body's stream controller, the response body's reader, waitUntil promises. */
const live = new Map();

function describe(value) {
  if (value === null) return 'null';
  if (typeof value !== 'object') return typeof value;
  const name = value.constructor && value.constructor.name;
  return name ? `a ${name}` : 'an object';
}

function logError(prefix, err) {
  try {
    host.log('error', `${prefix}: ${err && err.stack ? err.stack : String(err)}`);
  } catch {
    // logging must never break a request
  }
}

/**
 * What warm() passes to init: V8 compiles a function at its first call, so the pool's
 * warm-up calls it with this, and it returns before doing anything. Unreachable to tenant
 * code (module scope; init runs only from the host).
 */
const COMPILE_ONLY = freeze({});

/**
 * The worker module's namespace, handed over by the load's root module once the worker's
 * module graph has evaluated (LOAD_ROOT_SOURCE in common/builtin-modules.ts): init takes it from here, so the host
 * can queue init right behind the evaluation instead of waiting for it to answer.
 */
let loadedNamespace = null;
// The root's first import takes this and deletes the global before any tenant code runs.
defineProperty(g, '__edgeModuleLoaded', {
  value: (namespace) => { if (loadedNamespace === null) loadedNamespace = namespace; },
  writable: false, enumerable: false, configurable: true,
});
/** What init throws when the module is still evaluating (a top-level await that waits on a timer or I/O). */
const NOT_EVALUATED = 'its top level (global scope) had not finished when the worker started: a top-level await may wait only on promises that settle at once (not on a timer or I/O)';

function install(callbacks, memoryMiB) {
  setHost(callbacks);
  installWasmLimits(g, memoryMiB);
  for (const name of ENTRY_POINTS) delete g[name];
}

function init(namespace, envData, options) {
  if (namespace === COMPILE_ONLY) return [];
  // null: the one the load's root module handed over.
  if (namespace === null) {
    namespace = loadedNamespace;
    if (namespace === null) throw new ErrorCtor(NOT_EVALUATED);
  }
  workerName = String(options.workerName);
  if (options.htmlRewriter === true) warmHtmlRewriter();
  const def = namespace.default;
  const handlers = [];
  if (def !== null && (typeof def === 'object' || typeof def === 'function')) {
    for (const k of ['fetch', 'scheduled', 'queue', 'tail']) if (typeof def[k] === 'function') push(handlers, k);
  }
  entry = isEntrypointClass(def) ? entrypointAdapter(def) : def;
  rpcEntry = (text, ctx, url, token) => workerRpc(namespace, text, ctx, url, token);
  exportsOf = namespace;
  if (entry !== def) {
    for (const k of ['fetch', 'scheduled', 'queue', 'tail']) if (typeof def.prototype[k] === 'function') push(handlers, k);
    // A WorkerEntrypoint serves RPC (service bindings) even without a fetch() method.
    push(handlers, 'rpc');
  }
  // A dynamic worker's plain values (WorkerCode.env) first: bindings are never shadowed by them.
  const bindings = envData.values ? { ...envValues(envData.values), ...envData.text } : { ...envData.text };
  // Each binding object is registered: a Worker Loader's WorkerCode.env may pass it on (loader.js).
  // ai bindings arrive as { name: { model } }: the server's address never enters the isolate.
  for (const name of Object.keys(envData.ai ?? {})) bindings[name] = registerBinding(aiBinding(name), name);
  // actor bindings arrive as names: the DurableActor's uid never enters the isolate.
  for (const name of envData.actors ?? []) bindings[name] = registerBinding(actorNamespace(String(name)), name);
  // service bindings arrive as names: the bound worker (and entrypoint) stays on the host.
  for (const name of envData.services ?? []) bindings[name] = registerServiceBinding(serviceBinding(String(name)), name);
  for (const name of envData.loaders ?? []) bindings[name] = registerBinding(loaderBinding(String(name)), name);
  if (envData.refs) envRefs(envData.refs, bindings);
  if (envData.outbound) routeOutbound(envData.outbound, bindings);
  env = freeze(bindings);
  setWorkersEnv(env);
  if (options.actor) {
    // An actor isolate: requests go to the instance of the exported class (see durable.js).
    const actor = actorInit(namespace, options.actor, env, workerName);
    entry = actor.adapter;
    rpcEntry = actor.adapter.rpc;
    initialized = true;
    return actor.handlers;
  }
  initialized = true;
  return handlers;
}

/** The message workerd gives a dynamic worker whose globalOutbound is null. */
const OUTBOUND_BLOCKED = 'This worker is not permitted to access the internet via global functions like fetch(). It must use capabilities (such as bindings in \'env\') to talk to the outside world.';

/**
 * A dynamic worker's globalOutbound: 'block', or 'service:<binding>', the service binding
 * (not in its env) that receives every fetch(). The host refuses the isolate's own fetch()
 * either way; this only makes the error the caller sees, or the route, the runtime's.
 */
function routeOutbound(outbound, bindings) {
  let fetchImpl;
  if (outbound === 'block') {
    fetchImpl = async () => { throw new TypeError(OUTBOUND_BLOCKED); };
  } else {
    const name = String(outbound).slice('service:'.length);
    const via = bindings[name];
    delete bindings[name];
    fetchImpl = (input, init = undefined) => via.fetch(input, init);
  }
  defineProperty(g, 'fetch', { value: fetchImpl, writable: true, enumerable: false, configurable: true });
}

/**
 * `export default class extends WorkerEntrypoint`: one instance per event, with ctx and env,
 * as on Workers; RPC calls go to the instance's methods.
 */
function entrypointAdapter(cls) {
  return {
    fetch(request, envArg, ctx) {
      const instance = new cls(ctx, envArg);
      if (typeof instance.fetch !== 'function') throw new TypeError(`worker ${workerName}: the default entrypoint has no fetch() method`);
      return instance.fetch(request);
    },
  };
}

/** The adapter for the named export `name`, which must extend WorkerEntrypoint. */
function namedEntrypoint(name) {
  const cls = exportsOf !== null ? exportsOf[name] : undefined;
  if (!isEntrypointClass(cls)) throw new TypeError(`worker ${workerName}: its export "${name}" does not extend WorkerEntrypoint, so a service binding cannot reach it`);
  return entrypointAdapter(cls);
}

/**
 * An RPC call on a worker (through a service binding): the entrypoint the host names in the
 * URL's path (empty: the default export) must be a class extending WorkerEntrypoint; one
 * instance per call, with ctx and env.
 */
function workerRpc(namespace, text, ctx, url, token) {
  const path = StringCtor(url).replace(/^https:\/\/rpc\.internal\//, '');
  const name = path === '' ? 'default' : path;
  const cls = namespace[name];
  if (!isEntrypointClass(cls)) {
    const what = name === 'default' ? 'its default export' : `its export "${name}"`;
    throw new TypeError(`worker ${workerName} cannot be called over RPC: ${what} does not extend WorkerEntrypoint`);
  }
  return rpcInvoke(new cls(ctx, env), text, token);
}

/** Largest response body returned inline (as a latin1 string) with the response head. */
const INLINE_BODY_BYTES = 64 * 1024;
const fromCharCode = String.fromCharCode;

function latin1(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; i += 8192) out += fromCharCode.apply(null, bytes.subarray(i, i + 8192));
  return out;
}

/**
 * The response on the wire (see node-agent/bridge.ts, encodeResponse/decodeResponse):
 * one string "status\nstatusText\ndone\nkind\ncount\n(name\nvalue\n)*" followed, for
 * kind "b", by the body as latin1, for kind "u" by the body as text (the host encodes it
 * to UTF-8); for a byte body over INLINE_BODY_BYTES, kind "a" and an
 * object {head, body: ArrayBuffer}. Strings cross the isolate boundary far cheaper than
 * structured-cloned objects, and this runs once per request.
 */
function encodeResponse(status, statusText, headers, kind, done, tail) {
  let head = `${status}\n${statusText.replace(/[\r\n]/g, ' ')}\n${done ? 1 : 0}\n${kind}\n${headers.length}\n`;
  for (let i = 0; i < headers.length; i++) head += `${headers[i][0]}\n${headers[i][1]}\n`;
  return tail === undefined ? head : head + tail;
}

async function dispatch(id, head, reqBody, entrypointName = undefined) {
  if (!initialized && id !== -1) throw new Error(`worker ${workerName} did not initialize`);
  const state = { feed: null, reader: null, waitUntil: [], request: null };
  live.set(id, state);
  // head: "method\nurl\nclientAddress\ncf(\nname\nvalue)*" (HTTP forbids newlines in all of
  // them; cf is JSON or empty: encodeRequestHead in node-agent/abi/bridge.ts)
  const parts = head.split('\n');
  const headers = [];
  // The host's client address is THE CF-Connecting-IP: one a request carried is replaced, not appended to.
  const client = parts[2];
  const cf = parts[3] ? freeze(JSONParse(parts[3])) : undefined;
  for (let i = 4; i + 1 < parts.length; i += 2) {
    if (client && parts[i] === 'cf-connecting-ip') continue;
    push(headers, [parts[i], parts[i + 1]]);
  }
  if (client) push(headers, ['cf-connecting-ip', client]);
  let body = null;
  if (reqBody === 1) { // streamed: see WireBody in node-agent/bridge.ts
    // pull() tells the host the handler wants more: a host that feeds the body only on
    // demand (an actor's caller, node-agent/actors/isolate.ts) holds nothing ahead of it.
    const fed = fedStream(() => { host.bodyDemand(id).then(undefined, noop); });
    state.feed = fed;
    body = fed.stream;
  } else if (typeof reqBody === 'string') {
    // latin1: one char per byte (see DispatchRequest.body)
    body = new UInt8(reqBody.length);
    for (let i = 0; i < reqBody.length; i++) body[i] = reqBody.charCodeAt(i);
  } else if (reqBody) {
    body = new UInt8(reqBody);
  }
  const ctx = freeze({
    waitUntil(promise) {
      push(state.waitUntil, PromiseCtor.resolve(promise).catch((err) => logError(`worker ${workerName}: ctx.waitUntil promise rejected`, err)));
    },
    passThroughOnException() {},
  });
  setWorkersWaitUntil(ctx.waitUntil);
  // An RPC call (rpc.js): only the runtime makes requests with this method, which is no HTTP token.
  if (parts[0] === RPC_METHOD && rpcEntry !== null) {
    let token = null;
    for (let i = 0; i < headers.length; i++) if (headers[i][0] === RPC_CALLBACK_HEADER) token = headers[i][1];
    const text = await rpcEntry(decoder.decode(body ?? new UInt8(0)), ctx, parts[1], token);
    const done = state.waitUntil.length === 0;
    if (done) live.delete(id);
    if (text.length <= INLINE_BODY_BYTES) return encodeResponse(200, 'OK', [], 'u', done, text);
    return { head: encodeResponse(200, 'OK', [], 'a', done, undefined), body: encoder.encode(text).buffer };
  }
  const request = makeRequest({ url: parts[1], method: parts[0], headers, body, cf });
  state.request = request;
  // A service binding's fetch() to a named entrypoint (the host names it; RPC reads the URL instead).
  const target = entrypointName === undefined ? entry : namedEntrypoint(StringCtor(entrypointName));
  if (!target || typeof target.fetch !== 'function') {
    throw new Error(`worker ${workerName} has no fetch handler: export default { async fetch(request, env, ctx) { ... } }`);
  }
  const res = await target.fetch(request, env, ctx);
  if (!(res instanceof ResponseCtor)) {
    throw new TypeError(`worker ${workerName}: the fetch handler returned ${describe(res)}, not a Response`);
  }
  const { status, statusText, headers: outHeaders } = responseParts(res);
  // A 101 hands the client end of its WebSocketPair to the host (kind "w<id>", no body).
  const socket = takeResponseSocket(res);
  const out = bodyOf(res);
  if (out !== null && typeof out !== 'string' && !(out instanceof UInt8)) state.reader = bodyReader(out);
  // Nothing left to wait for: forget the request now so the host can skip settle().
  const done = requestOver(state);
  if (done) live.delete(id);
  if (socket !== null) return encodeResponse(status, statusText, outHeaders, `w${socket}`, done, undefined);
  if (out === null) return encodeResponse(status, statusText, outHeaders, 'n', done, undefined);
  if (state.reader !== null) return encodeResponse(status, statusText, outHeaders, 's', done, undefined);
  // A small text body goes as the string itself: the host encodes it to UTF-8 natively.
  // A big one is encoded here, where the isolate's memory limit bounds what it can cost.
  if (typeof out === 'string') {
    if (out.length <= INLINE_BODY_BYTES) return encodeResponse(status, statusText, outHeaders, 'u', done, out);
    const bytes = encoder.encode(out);
    return { head: encodeResponse(status, statusText, outHeaders, 'a', done, undefined), body: bytes.buffer };
  }
  if (out.byteLength <= INLINE_BODY_BYTES) return encodeResponse(status, statusText, outHeaders, 'b', done, latin1(out));
  return { head: encodeResponse(status, statusText, outHeaders, 'a', done, undefined), body: out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength) };
}

/**
 * Runs the request path once in a pooled isolate, before any worker takes it (pool.ts).
 * V8 compiles a function on its first call, and the snapshot keeps no code that ran at
 * snapshot time (see web/index.js), so a fresh isolate's first request used to compile
 * dispatch, Request, Headers, URL, Response and the encoders on the request's clock
 * (~1.5 ms: most of a dynamic worker's load() to first response). No worker, env or
 * tenant code exists yet; what the request leaves (the handler, its state, ctx.waitUntil)
 * is put back as it was. init is compiled here too, without running (COMPILE_ONLY). In
 * two steps: 'begin' leaves the warm-up's handler in place so the host can then send one
 * request through __edgeDispatch itself (isolated-vm's path for an entry point's promise
 * has first-call costs of its own, ~0.08 ms), and 'end' puts everything back.
 */
async function warm(step = 'begin') {
  if (step === 'end') {
    entry = null;
    live.delete(-1);
    setWorkersWaitUntil(null);
    return;
  }
  entry = {
    fetch(request) {
      request.headers.get('accept');
      return new ResponseCtor('ok', { status: 200, headers: { 'content-type': 'text/plain' } });
    },
  };
  try {
    await dispatch(-1, 'GET\nhttp://warm.invalid/\n\n\naccept\n*/*', null);
    isEntrypointClass(entry);
    init(COMPILE_ONLY);
    // What init does with a dynamic worker's plain env values (WorkerCode.env).
    envValues(JSONStringify(encode({ warm: [1, 'a', { b: null }] }, noop)));
  } finally {
    live.delete(-1);
    setWorkersWaitUntil(null);
  }
}

// What leaves the isolate when a call fails: text made here, inside the isolate and
// under the request's budgets (see rejectsPlainly below). Only intrinsics captured at
// snapshot time are used: a worker may have replaced them since.
const apply = Reflect.apply;
const ErrorCtor = Error;
const StringCtor = String;
const JSONStringify = JSON.stringify;
const JSONParse = JSON.parse;

function errorText(e) {
  try {
    return StringCtor(e !== null && typeof e === 'object' && typeof e.stack === 'string' ? e.stack : e);
  } catch {
    return 'an error that cannot be printed';
  }
}

function pushBody(id, chunk) {
  const state = live.get(id);
  if (!state || !state.feed) return;
  if (chunk === null) {
    state.feed.close();
    // Nothing more comes from the host: a response made after the handler read it all is the whole request.
    state.feed = null;
  } else {
    state.feed.enqueue(new UInt8(chunk));
  }
}

/**
 * What pullBody answers at a body's end when nothing of the request is left (no waitUntil,
 * no request body still fed): the request is over, as one whose response was whole is, and
 * the host frees the isolate without a settle() round trip. null: the body ended, settle().
 */
const BODY_DONE = 'done';

/** Nothing of a request is left: no response body to pull, no waitUntil, no request body still fed. */
function requestOver(state) {
  return state.reader === null && state.waitUntil.length === 0 && state.feed === null;
}

async function pullBody(id) {
  const state = live.get(id);
  if (!state || !state.reader) return null;
  for (;;) {
    const { done, value } = await state.reader.read();
    if (done) {
      state.reader = null;
      if (requestOver(state)) {
        live.delete(id);
        return BODY_DONE;
      }
      return null;
    }
    if (!(value instanceof UInt8)) {
      throw new TypeError(`worker ${workerName}: a response body stream produced ${describe(value)}; chunks must be Uint8Array`);
    }
    if (value.byteLength === 0) continue;
    return value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength);
  }
}

function cancel(id, reason) {
  const state = live.get(id);
  if (!state) return;
  // The client went away (or its body failed): request.signal says so, as on Workers, and
  // a fetch() made with that signal is cancelled with it.
  if (state.request !== null) abortRequest(state.request, new DOMException(`The request was aborted: ${String(reason)}`, 'AbortError'));
  const err = new Error(String(reason));
  if (state.feed) state.feed.error(err);
  if (state.reader) state.reader.cancel(err).catch(() => {});
}

async function settle(id) {
  const state = live.get(id);
  if (!state) return;
  // waitUntil may be called again while earlier promises settle.
  for (let seen = 0; seen < state.waitUntil.length;) {
    const batch = state.waitUntil.slice(seen);
    seen = state.waitUntil.length;
    await allSettled(batch);
  }
  live.delete(id);
}

// The entry points that return a promise reject only with a plain Error whose text is made
// here, inside the isolate and under the request's budgets: isolated-vm copies a
// rejection's value on the host's thread, where a worker's error object with hostile
// getters (`get stack() { for (;;) {} }`) would hold the agent's event loop forever.
const promiseThen = Promise.prototype.then;
const plainRejection = (e) => { throw new ErrorCtor(errorText(e)); };
// A request's exception also keeps its name and message apart (an actor's caller rethrows
// them: ActorException in abi/bridge.ts), read here under the request's budgets. They ride
// in the plain error's stack, the one other field isolated-vm copies: EXCEPTION_MARK there.
const EXCEPTION_MARK = '\u0000edge-exception:';
function exceptionOf(e) {
  try {
    if (e instanceof ErrorCtor) return [StringCtor(e.name), StringCtor(e.message)];
    return ['Error', StringCtor(e)];
  } catch {
    return ['Error', 'an error that cannot be printed'];
  }
}
const plainException = (e) => {
  const err = new ErrorCtor(errorText(e));
  err.stack = EXCEPTION_MARK + JSONStringify(exceptionOf(e));
  throw err;
};
function rejectsWithException(fn) {
  return function () {
    return apply(promiseThen, apply(fn, undefined, arguments), [undefined, plainException]);
  };
}
/**
 * __edgeDispatch: answers through host.respond, an "ignored" callback, instead of returning
 * its promise. isolated-vm's promise-returning apply captures the caller's stack trace and
 * makes a promise on the host's thread for every call, about a quarter of a bare request's
 * cost there (docs/agent.md, "Dispatch"); a callback's arguments are copied here, on the
 * isolate's thread. The exception's text is made here, as rejectsWithException does.
 */
function answersThroughHost(fn) {
  return function (id) {
    const answer = (response) => {
      try {
        host.respond(id, response, null, null);
      } catch (e) {
        answerError(e);
      }
    };
    const answerError = (e) => {
      let text;
      let exception;
      try {
        text = errorText(e);
        exception = JSONStringify(exceptionOf(e));
      } catch {
        text = 'an error that cannot be printed';
        exception = '["Error","an error that cannot be printed"]';
      }
      host.respond(id, null, text, exception);
    };
    apply(promiseThen, apply(fn, undefined, arguments), [answer, answerError]);
  };
}
function rejectsPlainly(fn) {
  return function () {
    return apply(promiseThen, apply(fn, undefined, arguments), [undefined, plainRejection]);
  };
}

const exported = {
  __edgeInstall: install, __edgeInit: init, __edgeDispatch: answersThroughHost(dispatch), __edgePushBody: pushBody,
  __edgePullBody: rejectsPlainly(pullBody), __edgeCancel: cancel, __edgeSettle: rejectsPlainly(settle),
};
ENTRY_POINTS[ENTRY_POINTS.length] = '__edgeHostSettle';
exported.__edgeHostSettle = settleHost;
// Actor isolates: __edgeActor(op, arg), see node-agent/shim/durable.js.
ENTRY_POINTS[ENTRY_POINTS.length] = '__edgeActor';
exported.__edgeActor = rejectsPlainly(actorEvent);
exported.__edgeSocketEvent = rejectsPlainly(socketEvent);
ENTRY_POINTS[ENTRY_POINTS.length] = '__edgeRpcLocal';
exported.__edgeRpcLocal = rejectsWithException(rpcLocal);
ENTRY_POINTS[ENTRY_POINTS.length] = '__edgeWarm';
exported.__edgeWarm = warm;
for (const name of ENTRY_POINTS) {
  defineProperty(g, name, { value: exported[name], writable: false, enumerable: false, configurable: true });
}
