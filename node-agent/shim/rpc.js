// JS RPC (Workers' `stub.method(...args)`): the caller's stubs, the wire format, and the
// callee's side.
//
// Transport: a call is an internal request on the actor fetch path (the actor router, peer
// forwarding, the input and output gates: a call runs one at a time with the actor's other
// events, and its writes are committed before its result returns). It is marked by its
// method, RPC_METHOD, which is not an HTTP token: no Request a worker builds (stub.fetch())
// and no request a client sends can carry it. Its body is one message, JSON:
//   { t: 0 | refId, k: 'call' | 'get' | 'apply' | 'release', n: name, a: encoded args,
//     p?: [{ f: from, k: 'call' | 'get', n, a? }] }
// and the answer's body `{ v: encoded result, c?: [{ v } | { e: [name, message] }] }`. A callee's exception travels as an
// actor's exception does (name and message; standard Error types keep their type).
//
// Values are structured-cloned (encode/decode below): primitives (undefined, NaN, -0 and
// BigInt included), Date, RegExp, ArrayBuffer, typed arrays, DataView, Map, Set, Error
// (standard types), arrays and plain objects, with shared and cyclic references kept.
// Anything else (a symbol, a Promise, an instance of a class of one's own) is a
// DataCloneError at the side that sends it, before anything is sent.
//
// By reference: an RpcTarget instance or a function a callee returns stays in the callee's
// table of exports (REF_LIMIT per activation, oldest dropped first) and the caller gets a
// stub calling it through the same actor; the stub's [Symbol.dispose]() releases it, and it
// is gone with the activation. Pipelining: a property or method of an un-awaited call's
// result (`stub.getCounter().increment()`, `await stub.get().x`) rides in the call's own
// message (`p`: operations on its result or on earlier ones) and the answer carries each
// one's result (`c`): one round trip, as on workerd. Once the call has gone, they wait for
// its result and run on it.
//
// Runs at snapshot time: nothing here calls a host callback until used.
import { DOMException, hostOutcome } from './web/util.js';
import { host } from './host.js';
import { btoa, atob } from './web/base64.js';
import { RpcTarget, BASE_PROTOTYPES } from './workers-module.js';
import { ArrayPush, ArrayIncludes, MapGet, MapSet, MapDelete, MapHas } from './web/primordials.js';

/** Not an HTTP token (':' is not a tchar): only the runtime can make a request with it. */
export const RPC_METHOD = 'EDGE:RPC';
/** RPC_CALLBACK_HEADER (node-agent/abi/bridge.ts): the call's arguments hold functions or RpcTargets. */
export const RPC_CALLBACK_HEADER = 'x-edge-rpc-callbacks';

const freeze = Object.freeze;
const getPrototypeOf = Object.getPrototypeOf;
const getOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
const objectKeys = Object.keys;
const isArray = Array.isArray;
const stringify = JSON.stringify;
const parse = JSON.parse;
const PromiseCtor = Promise;
const promiseThen = Promise.prototype.then;
const ReflectApply = Reflect.apply;
const noop = () => {};
const ProxyCtor = Proxy;
const MapCtor = Map;
const SetCtor = Set;
const DateCtor = Date;
const RegExpCtor = RegExp;
const ErrorCtor = Error;
const TypeErrorCtor = TypeError;
const RangeErrorCtor = RangeError;
const StringCtor = String;
const NumberCtor = Number;
const BigIntCtor = BigInt;
const ArrayBufferCtor = ArrayBuffer;
const isView = ArrayBuffer.isView;
const DataViewCtor = DataView;
const Uint8 = Uint8Array;
const fromCharCode = String.fromCharCode;
const objectIs = Object.is;
const hasOwn = Object.hasOwn;
const dateGetTime = Date.prototype.getTime;
const mapEntries = Map.prototype.entries;
const setValues = Set.prototype.values;
const SymbolDispose = Symbol.dispose; // defined by workers-module.js where V8 lacks it
const TypedArray = getPrototypeOf(Uint8Array);
const typedArrayName = getOwnPropertyDescriptor(TypedArray.prototype, Symbol.toStringTag).get;
const TYPED_ARRAYS = {
  __proto__: null, Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array,
  Float32Array, Float64Array, BigInt64Array, BigUint64Array,
};
const ERROR_TYPES = { __proto__: null, Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError };

/** The largest serialized call or result in UTF-8 bytes (Workers' limit is 32 MiB too); checked before anything is sent. */
export const MAX_RPC_MESSAGE_BYTES = 32 * 1024 * 1024;

function utf8Length(text) {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) { n += 4; i++; } else n += 3;
  }
  return n;
}

/** A message as text, refused (RangeError, workerd's wording) when over the limit. */
function messageText(msg) {
  const text = stringify(msg);
  if (text.length > MAX_RPC_MESSAGE_BYTES / 3) {
    const bytes = utf8Length(text);
    if (bytes > MAX_RPC_MESSAGE_BYTES) throw new RangeErrorCtor(`Serialized RPC arguments or return values are limited to 32MiB, but the size of this value was: ${bytes} bytes.`);
  }
  return text;
}

/** Workers' wording (workerd, worker-rpc.c++). */
export const notImplemented = (name) => new TypeErrorCtor(`The RPC receiver does not implement the method "${name}".`);
const dataCloneError = (what) => new DOMException(`Could not serialize object of type "${what}". This type does not support serialization.`, 'DataCloneError');

/** Handler methods the runtime calls itself: not callable over RPC. */
const RESERVED = ['constructor', 'fetch', 'connect', 'alarm', 'webSocketMessage', 'webSocketClose', 'webSocketError', 'scheduled', 'queue', 'tail', 'email', 'dup'];

function bytesToBase64(u8) {
  let s = '';
  for (let i = 0; i < u8.length; i += 8192) s += ReflectApply(fromCharCode, null, u8.subarray(i, i + 8192));
  return btoa(s);
}

function base64ToBytes(b64) {
  const s = atob(b64);
  const out = new Uint8(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function className(v) {
  try {
    const c = getPrototypeOf(v)?.constructor;
    return typeof c === 'function' && typeof c.name === 'string' && c.name !== '' ? c.name : 'Object';
  } catch {
    return 'Object';
  }
}

function isPlainObject(v) {
  const p = getPrototypeOf(v);
  return p === null || p === Object.prototype;
}

/**
 * A value as a JSON-able tree. `byRef(v)` is called for an RpcTarget or a function and
 * returns the node that stands for it (or throws when references cannot be sent).
 */
export function encode(value, byRef) {
  const seen = new MapCtor();
  let count = 0;
  const walk = (v) => {
    const t = typeof v;
    if (t === 'string' || t === 'boolean' || v === null) return v;
    if (t === 'number') return NumberCtor.isFinite(v) && !objectIs(v, -0) ? v : ['n', objectIs(v, -0) ? '-0' : StringCtor(v)];
    if (t === 'undefined') return ['u'];
    if (t === 'bigint') return ['I', StringCtor(v)];
    if (t === 'symbol') throw new DOMException('Could not serialize a symbol.', 'DataCloneError');
    if (t === 'function') return byRef(v);
    const back = MapGet(seen, v);
    if (back !== undefined) return ['r', back];
    if (v instanceof RpcTarget) return byRef(v);
    MapSet(seen, v, count++);
    if (isArray(v)) {
      const items = [];
      for (let i = 0; i < v.length; i++) ArrayPush(items, walk(v[i]));
      return ['A', items];
    }
    if (v instanceof DateCtor) return ['D', ReflectApply(dateGetTime, v, [])];
    if (v instanceof RegExpCtor) return ['R', v.source, v.flags];
    if (v instanceof ArrayBufferCtor) return ['B', bytesToBase64(new Uint8(v))];
    if (isView(v)) {
      const bytes = new Uint8(v.buffer, v.byteOffset, v.byteLength);
      return ['T', v instanceof DataViewCtor ? 'DataView' : ReflectApply(typedArrayName, v, []), bytesToBase64(bytes)];
    }
    if (v instanceof MapCtor) {
      const out = [];
      for (const [k, x] of ReflectApply(mapEntries, v, [])) ArrayPush(out, [walk(k), walk(x)]);
      return ['M', out];
    }
    if (v instanceof SetCtor) {
      const out = [];
      for (const x of ReflectApply(setValues, v, [])) ArrayPush(out, walk(x));
      return ['S', out];
    }
    if (v instanceof ErrorCtor) {
      const name = ERROR_TYPES[v.name] !== undefined ? v.name : 'Error';
      return ['E', name, StringCtor(v.message), typeof v.stack === 'string' ? v.stack : null];
    }
    if (v instanceof PromiseCtor) throw dataCloneError('Promise');
    if (!isPlainObject(v)) throw dataCloneError(className(v));
    const out = [];
    const keys = objectKeys(v);
    for (let i = 0; i < keys.length; i++) ArrayPush(out, [keys[i], walk(v[keys[i]])]);
    return ['O', out];
  };
  return walk(value);
}

/** The inverse of encode; `ref(node)` makes the stub for a reference node. */
export function decode(tree, ref) {
  const made = [];
  const walk = (n) => {
    if (!isArray(n)) return n;
    switch (n[0]) {
      case 'u': return undefined;
      case 'n': return NumberCtor(n[1]);
      case 'I': return BigIntCtor(n[1]);
      case 'r': return made[n[1]];
      case 'F': case 'C': return ref(n);
      case 'A': {
        const out = [];
        ArrayPush(made, out);
        for (let i = 0; i < n[1].length; i++) out[i] = walk(n[1][i]);
        return out;
      }
      case 'D': { const d = new DateCtor(n[1]); ArrayPush(made, d); return d; }
      case 'R': { const r = new RegExpCtor(n[1], n[2]); ArrayPush(made, r); return r; }
      case 'B': { const b = base64ToBytes(n[1]).buffer; ArrayPush(made, b); return b; }
      case 'T': {
        const bytes = base64ToBytes(n[2]);
        let out;
        if (n[1] === 'DataView') out = new DataViewCtor(bytes.buffer);
        else {
          const Ctor = TYPED_ARRAYS[n[1]];
          if (Ctor === undefined) throw new TypeErrorCtor(`RPC: unknown typed array ${StringCtor(n[1])}`);
          out = new Ctor(bytes.buffer, 0, bytes.byteLength / Ctor.BYTES_PER_ELEMENT);
        }
        ArrayPush(made, out);
        return out;
      }
      case 'M': {
        const out = new MapCtor();
        ArrayPush(made, out);
        for (let i = 0; i < n[1].length; i++) MapSet(out, walk(n[1][i][0]), walk(n[1][i][1]));
        return out;
      }
      case 'S': {
        const out = new SetCtor();
        ArrayPush(made, out);
        for (let i = 0; i < n[1].length; i++) out.add(walk(n[1][i]));
        return out;
      }
      case 'E': {
        const Ctor = ERROR_TYPES[n[1]] ?? ErrorCtor;
        const e = new Ctor(n[2]);
        if (typeof n[3] === 'string') Object.defineProperty(e, 'stack', { value: n[3], writable: true, configurable: true });
        ArrayPush(made, e);
        return e;
      }
      case 'O': {
        const out = {};
        ArrayPush(made, out);
        for (let i = 0; i < n[1].length; i++) Object.defineProperty(out, n[1][i][0], { value: walk(n[1][i][1]), writable: true, enumerable: true, configurable: true });
        return out;
      }
      default: throw new TypeErrorCtor(`RPC: malformed value (${StringCtor(n[0])})`);
    }
  };
  return walk(tree);
}

// ---- the callee ------------------------------------------------------------------------

/** How many RpcTargets and functions a callee keeps for its callers' stubs. */
export const REF_LIMIT = 1024;
const refs = new MapCtor();
let nextRef = 1;

function exportRef(v) {
  const id = nextRef++;
  MapSet(refs, id, v);
  if (refs.size > REF_LIMIT) {
    for (const k of refs.keys()) { MapDelete(refs, k); break; }
  }
  return ['F', id, typeof v === 'function'];
}

/** A callee's stub for a function or RpcTarget its caller passed: calls back while the call is in flight. */
function callbackRef(token) {
  const send = (text) => hostOutcome(host.rpcCallback(token, text));
  return (node) => {
    if (node[0] !== 'C') throw new DOMException('RPC: a stub cannot be passed back to the object it calls', 'DataCloneError');
    return rpcStub(null, send, node[1], node[2] !== false);
  };
}
const noCallbacks = () => { throw new DOMException('RPC: functions and RpcTargets passed as arguments cannot be called here', 'DataCloneError'); };

/** A name's value on an RPC receiver: found on its prototype chain, below the base classes. */
function member(target, name) {
  if (typeof name !== 'string' || ArrayIncludes(RESERVED, name)) return undefined;
  for (let p = getPrototypeOf(target); p !== null && !ArrayIncludes(BASE_PROTOTYPES, p); p = getPrototypeOf(p)) {
    const d = getOwnPropertyDescriptor(p, name);
    if (d === undefined) continue;
    if (d.get !== undefined) return { value: ReflectApply(d.get, target, []) };
    return { value: d.value };
  }
  return undefined;
}

/**
 * Runs one call message on `root` (the actor instance, or an entrypoint) and returns the
 * answer's text. A throw is the callee's exception: the caller rethrows it.
 */
export async function rpcInvoke(root, text, token = null) {
  const msg = parse(text);
  let target = root;
  if (msg.t !== 0) {
    if (!MapHas(refs, msg.t)) throw new ErrorCtor('RPC stub used after being disposed, or after the object it refers to was released.');
    target = MapGet(refs, msg.t);
  }
  if (msg.k === 'release') {
    if (msg.t !== 0) MapDelete(refs, msg.t);
    return stringify({ v: ['u'] });
  }
  const args = msg.a === undefined ? [] : decode(msg.a, token ? callbackRef(token) : noCallbacks);
  let result;
  if (msg.k === 'apply') {
    if (typeof target !== 'function') throw new TypeErrorCtor('RPC: the stub does not refer to a function');
    result = await ReflectApply(target, undefined, args);
  } else {
    const name = StringCtor(msg.n);
    const m = typeof target === 'object' && target !== null ? member(target, name) : undefined;
    if (msg.k === 'get') {
      if (m === undefined) result = undefined;
      else result = typeof m.value === 'function' ? bindMethod(m.value, target) : await m.value;
    } else {
      if (m === undefined || typeof m.value !== 'function') throw notImplemented(name);
      result = await ReflectApply(m.value, target, args);
    }
  }
  return messageText(await withChain({ v: encode(result, exportRef) }, result, msg.p, token ? callbackRef(token) : noCallbacks, exportRef));
}

/** Marks a pipelined operation's failure among the results. */
const FAILED = Symbol('failed');

/** A pipelined operation's receiver member: a class instance's by RPC's rules, a plain object's own. */
function pipelinedMember(from, name) {
  if (from === null || (typeof from !== 'object' && typeof from !== 'function')) return undefined;
  if (typeof from === 'object' && !(from instanceof RpcTarget) && isPlainObject(from)) {
    return hasOwn(from, name) ? { value: from[name] } : undefined;
  }
  if (isArray(from)) return hasOwn(from, name) ? { value: from[name] } : undefined;
  return typeof from === 'object' ? member(from, name) : undefined;
}

/**
 * Pipelining: the operations a caller chained on the call's result before it was sent,
 * each on the result of the call (f: 0) or of an earlier operation (f: i + 1), run in
 * order; `answer.c[i]` is operation i's result, or its error as {e: [name, message]}.
 */
async function withChain(answer, result, chain, ref, byRef) {
  if (!isArray(chain) || chain.length === 0) return answer;
  const results = [result];
  const out = [];
  for (let i = 0; i < chain.length; i++) {
    const op = chain[i];
    try {
      const from = results[op.f];
      if (from !== null && typeof from === 'object' && from[FAILED] !== undefined) throw from[FAILED];
      const name = StringCtor(op.n);
      const m = pipelinedMember(from, name);
      let r;
      if (op.k === 'get') r = m === undefined ? undefined : await m.value;
      else {
        if (m === undefined || typeof m.value !== 'function') throw notImplemented(name);
        r = await ReflectApply(m.value, from, op.a === undefined ? [] : decode(op.a, ref));
      }
      ArrayPush(results, r);
      ArrayPush(out, { v: encode(r, byRef) });
    } catch (err) {
      ArrayPush(results, { [FAILED]: err });
      let name = 'Error';
      let message = '';
      try { name = StringCtor(err.name); message = StringCtor(err.message); } catch { /* unprintable */ }
      ArrayPush(out, { e: [name, message] });
    }
  }
  answer.c = out;
  return answer;
}

function bindMethod(fn, target) {
  return (...args) => ReflectApply(fn, target, args);
}

// ---- callbacks: the caller's functions and RpcTargets, while its call is in flight ------

const localExports = new MapCtor();
let nextLocal = 1;

/**
 * Functions and RpcTargets this isolate put in a dynamic worker's env (loader.js): kept for
 * the isolate's life, REF_LIMIT at most (the oldest dropped), called through rpcLocal.
 */
const envExports = new MapCtor();

/** Lends `v` to a dynamic worker's env; the id its stub calls. */
export function lendToEnv(v) {
  const id = nextLocal++;
  MapSet(envExports, id, v);
  if (envExports.size > REF_LIMIT) {
    for (const k of envExports.keys()) { MapDelete(envExports, k); break; }
  }
  return id;
}

/** A dynamic worker's stub for a function or RpcTarget its caller put in its env: calls back with `token`. */
export function envRefStub(token, id, callable) {
  return rpcStub(null, (text) => hostOutcome(host.rpcCallback(token, text)), id, callable);
}

/** __edgeRpcLocal: a callee calls a function or RpcTarget this isolate passed to it. */
export async function rpcLocal(text) {
  const msg = parse(text);
  if (msg.k === 'release') return stringify({ v: ['u'] });
  const lent = MapHas(localExports, msg.t) ? localExports : envExports;
  if (!MapHas(lent, msg.t)) throw new ErrorCtor('RPC stub used after the call it was passed to ended.');
  const target = MapGet(lent, msg.t);
  const args = msg.a === undefined ? [] : decode(msg.a, noCallbacks);
  let result;
  if (msg.k === 'apply') {
    if (typeof target !== 'function') throw new TypeErrorCtor('RPC: the stub does not refer to a function');
    result = await ReflectApply(target, undefined, args);
  } else {
    const name = StringCtor(msg.n);
    const m = typeof target === 'object' && target !== null ? member(target, name) : undefined;
    if (msg.k === 'get') result = m === undefined ? undefined : await m.value;
    else {
      if (m === undefined || typeof m.value !== 'function') throw notImplemented(name);
      result = await ReflectApply(m.value, target, args);
    }
  }
  return messageText(await withChain({ v: encode(result, noRefs) }, result, msg.p, noCallbacks, noRefs));
}

// ---- the caller ------------------------------------------------------------------------

const noRefs = (v) => { throw new DOMException(`RPC: ${typeof v === 'function' ? 'a function' : 'an RpcTarget'} cannot be passed back from a callback; pass data`, 'DataCloneError'); };

/** An error a pipelined operation threw in the callee, as the caller sees it. */
function remoteError(e) {
  const Ctor = ERROR_TYPES[e[0]] ?? ErrorCtor;
  const err = new Ctor(e[1]);
  err.remote = true;
  return err;
}

/**
 * A promise of a call's result whose properties pipeline: `p.x` is a promise of the
 * result's x, `p.x(...args)` calls it. While the call is not sent yet (see startCall), they ride in the same message (one round trip); after, they
 * wait for the result. `pending`: the call (null when there is none to ride in), `index`:
 * which of its results this is.
 */
function rpcPromise(promise, pending = null, index = 0) {
  // A call nobody awaits must not fail later work when it rejects (isolated-vm hands an
  // isolate's unhandled rejection to whatever it runs next): it is marked handled here, and
  // whoever awaits it still sees the rejection.
  ReflectApply(promiseThen, promise, [undefined, noop]);
  return new ProxyCtor(promise, {
    get(target, key) {
      if (key === 'then' || key === 'catch' || key === 'finally') {
        const fn = target[key];
        return (...args) => ReflectApply(fn, target, args);
      }
      if (typeof key === 'symbol') return SymbolDispose === key ? () => {} : undefined;
      return pipelined(target, pending, index, key);
    },
  });
}

function pipelined(promise, pending, index, key) {
  const ride = (k, args) => {
    if (pending === null) return null;
    try {
      return pending.append(index, k, key, args);
    } catch (err) {
      return { promise: PromiseCtor.reject(err), index: -1 };
    }
  };
  const call = (...args) => {
    const op = ride('call', args);
    if (op !== null) return rpcPromise(op.promise, op.index < 0 ? null : pending, op.index);
    return rpcPromise(ReflectApply(promiseThen, promise, [(v) => {
      const f = v === null || v === undefined ? undefined : v[key];
      if (typeof f !== 'function') throw notImplemented(key);
      return ReflectApply(f, v, args);
    }]));
  };
  const property = () => {
    const op = ride('get', undefined);
    if (op !== null) return op.promise;
    return ReflectApply(promiseThen, promise, [(v) => (v === null || v === undefined ? undefined : v[key])]);
  };
  call.then = (res, rej) => ReflectApply(promiseThen, property(), [res, rej]);
  call.catch = (rej) => ReflectApply(promiseThen, property(), [undefined, rej]);
  return call;
}

/**
 * One call: sent once the code that made it has run on (two microtask turns), with
 * whatever was pipelined on it by then. `send(text, callbacks)` delivers the message's text and resolves with the
 * answer's; `refNode(node)` makes the stub for a reference in the answer.
 */
function startCall(send, t, msg, refNode) {
  // Functions and RpcTargets among the arguments are lent for the call's duration.
  const lent = [];
  const lend = (v) => {
    const id = nextLocal++;
    MapSet(localExports, id, v);
    ArrayPush(lent, id);
    return ['C', id, typeof v === 'function'];
  };
  const returnLent = () => { for (let i = 0; i < lent.length; i++) MapDelete(localExports, lent[i]); };
  const ops = [];
  const waiters = [];
  let sent = false;
  let args;
  try {
    args = msg.a === undefined ? undefined : encode(msg.a, lend);
  } catch (err) {
    returnLent();
    return { promise: PromiseCtor.reject(err), pending: null };
  }
  const failAll = (err) => { for (let i = 0; i < waiters.length; i++) waiters[i].reject(err); };
  // Sent two microtask turns from now: `await p.x` and Promise.all([p.x]) ask for `then`
  // one turn after the expression (a thenable is resolved in a job of its own), and must
  // still ride in this message.
  const promise = new PromiseCtor((resolve, reject) => {
    ReflectApply(promiseThen, ReflectApply(promiseThen, PromiseCtor.resolve(), [noop]), [() => {
      sent = true;
      let text;
      try {
        text = messageText(ops.length === 0 ? { t, k: msg.k, n: msg.n, a: args } : { t, k: msg.k, n: msg.n, a: args, p: ops });
      } catch (err) {
        returnLent();
        reject(err);
        failAll(err);
        return;
      }
      ReflectApply(promiseThen, send(text, lent.length > 0), [(answerText) => {
        returnLent();
        let answer;
        try {
          answer = parse(answerText);
          resolve(decode(answer.v, refNode));
        } catch (err) {
          reject(err);
          failAll(err);
          return;
        }
        for (let i = 0; i < waiters.length; i++) {
          const c = isArray(answer.c) ? answer.c[i] : undefined;
          try {
            if (c === undefined) throw new ErrorCtor('RPC: the receiver did not answer a pipelined call');
            if (c.e !== undefined) throw remoteError(c.e);
            waiters[i].resolve(decode(c.v, refNode));
          } catch (err) {
            waiters[i].reject(err);
          }
        }
      }, (err) => { returnLent(); reject(err); failAll(err); }]);
    }]);
  });
  const pending = {
    /** Rides an operation on result `from`; null once the call went. Throws what encoding its arguments throws. */
    append(from, k, n, argList) {
      if (sent) return null;
      const a = argList === undefined ? undefined : encode(argList, lend);
      ArrayPush(ops, a === undefined ? { f: from, k, n } : { f: from, k, n, a });
      const p = new PromiseCtor((resolve, reject) => ArrayPush(waiters, { resolve, reject }));
      return { promise: p, index: ops.length };
    },
  };
  return { promise, pending };
}

/**
 * A stub: `base`'s own properties as they are (a Durable Object stub's id, name, fetch),
 * any other name a remote method (`stub.m(...args)`) or property (`await stub.p`).
 * `send(message)` delivers a call message (an object) and resolves with the answer's text.
 * `t`: 0 for the root object, else the callee's ref id. `callable`: a function ref.
 */
export function rpcStub(base, send, t = 0, callable = false) {
  let disposed = false;
  // send(text, callbacks): delivers a call message's text, resolves with the answer's text.
  const refNode = (node) => {
    if (node[0] !== 'F') throw new TypeErrorCtor('RPC: malformed answer');
    return rpcStub(null, send, node[1], node[2] !== false);
  };
  const call = (msg) => {
    if (disposed) return { promise: PromiseCtor.reject(new ErrorCtor('RPC stub used after being disposed.')), pending: null };
    return startCall(send, t, msg, refNode);
  };
  const dispose = () => {
    if (disposed) return;
    disposed = true;
    if (t !== 0) ReflectApply(promiseThen, send(stringify({ t, k: 'release' }), false), [undefined, () => {}]);
  };
  const target = callable ? function () {} : (base ?? {});
  return new ProxyCtor(target, {
    get(tgt, key) {
      if (base !== null && getOwnPropertyDescriptor(base, key) !== undefined) return base[key];
      if (key === SymbolDispose) return dispose;
      if (typeof key === 'symbol' || key === 'then') return undefined;
      const method = (...args) => {
        const c = call({ k: 'call', n: key, a: args });
        return rpcPromise(c.promise, c.pending, 0);
      };
      method.then = (res, rej) => ReflectApply(promiseThen, call({ k: 'get', n: key }).promise, [res, rej]);
      method.catch = (rej) => ReflectApply(promiseThen, call({ k: 'get', n: key }).promise, [undefined, rej]);
      return method;
    },
    apply(_tgt, _this, args) {
      const c = call({ k: 'apply', a: args });
      return rpcPromise(c.promise, c.pending, 0);
    },
    set: () => false,
    defineProperty: () => false,
    deleteProperty: () => false,
  });
}
freeze(rpcStub);
