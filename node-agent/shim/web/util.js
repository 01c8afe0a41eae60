// Helpers shared by the Web API modules. Nothing here may call a host callback at load
// time: this code runs once at snapshot time, before any isolate has callbacks.
import { MapDelete, MapGet, MapSet } from './primordials.js';

/**
 * Passed as the first constructor argument by the shim itself to build objects that user
 * code may not construct (readers, controllers, signals) or that skip argument checks
 * because their data is already trusted. Never exported to user code.
 */
export const INTERNAL = Symbol('edge-internal');

export const isObject = (v) => v !== null && (typeof v === 'object' || typeof v === 'function');

export function illegalConstructor() {
  throw new TypeError('Illegal constructor');
}

export function requireArgs(got, needed, what) {
  if (got < needed) throw new TypeError(`${what}: ${needed} argument${needed > 1 ? 's' : ''} required, but only ${got} present`);
}

const DOM_CODES = {
  IndexSizeError: 1, HierarchyRequestError: 3, WrongDocumentError: 4, InvalidCharacterError: 5,
  NoModificationAllowedError: 7, NotFoundError: 8, NotSupportedError: 9, InvalidStateError: 11,
  SyntaxError: 12, InvalidModificationError: 13, NamespaceError: 14, InvalidAccessError: 15,
  TypeMismatchError: 17, SecurityError: 18, NetworkError: 19, AbortError: 20, URLMismatchError: 21,
  QuotaExceededError: 22, TimeoutError: 23, InvalidNodeTypeError: 24, DataCloneError: 25,
};

export class DOMException extends Error {
  constructor(message = '', name = 'Error') {
    super(String(message));
    Object.defineProperty(this, 'name', { value: String(name), writable: true, configurable: true });
    // The stack header was formatted during super() with the name "Error"; redo it so
    // logs show e.g. "QuotaExceededError: ...".
    if (typeof Error.captureStackTrace === 'function') Error.captureStackTrace(this, new.target);
  }

  get code() {
    return DOM_CODES[this.name] ?? 0;
  }
}

/** A view of the bytes of a BufferSource, without copying; throws TypeError otherwise. */
export function bytesOf(source, what) {
  if (source instanceof Uint8Array) return source;
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  if (ArrayBuffer.isView(source)) return new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
  throw new TypeError(`${what}: expected an ArrayBuffer or an ArrayBufferView`);
}

export const isBufferSource = (v) => v instanceof ArrayBuffer || ArrayBuffer.isView(v);

/** A fresh ArrayBuffer holding exactly these bytes. */
export const toArrayBuffer = (u8) => u8.buffer.slice(u8.byteOffset, u8.byteOffset + u8.byteLength);

export function concatBytes(chunks, total) {
  if (total === undefined) {
    total = 0;
    for (let i = 0; i < chunks.length; i++) total += chunks[i].byteLength;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (let i = 0; i < chunks.length; i++) {
    out.set(chunks[i], at);
    at += chunks[i].byteLength;
  }
  return out;
}

/**
 * Prototypes of the platform's classes, for console formatting (`inspect` shows their
 * accessors) and structuredClone (which refuses them, as browsers do for non-serializable
 * platform objects). Filled by ./index.js.
 */
export const platformPrototypes = new Map();

export function platformClassOf(value) {
  for (let p = Object.getPrototypeOf(value); p !== null; p = Object.getPrototypeOf(p)) {
    const entry = MapGet(platformPrototypes, p);
    if (entry) return entry;
  }
  return undefined;
}

export function setToStringTag(cls, tag) {
  Object.defineProperty(cls.prototype, Symbol.toStringTag, { value: tag, configurable: true });
}

const StringCtor = String;

/** An error's message as text, whatever was thrown (a getter that throws included). */
export function messageOf(err) {
  try {
    return StringCtor(err !== null && typeof err === 'object' && 'message' in err ? err.message : err);
  } catch {
    return 'an error that cannot be printed';
  }
}

// Captured before any user code runs.
const STANDARD_ERRORS = {
  __proto__: null, Error, TypeError, RangeError, ReferenceError, SyntaxError, EvalError, URIError,
};

/**
 * An exception a DurableActor threw, rethrown at its caller's stub.fetch() as Workers do:
 * a standard Error type keeps its type and message (a class of the actor's own becomes an
 * Error with its message), no stack, and `remote` is true.
 */
export function remoteException(x) {
  const Ctor = STANDARD_ERRORS[x.name] ?? Error;
  const e = new Ctor(x.message);
  e.remote = true;
  return e;
}

// Tickets of asynchronous host calls (HostAsync in node-agent/abi/bridge.ts): the resolver
// of the promise awaiting each one's outcome, or the outcome when it came first (the host
// may settle before the isolate has read the ticket of an async callback's promise).
const pendingHost = new Map();
// Captured: a worker may replace globalThis.Promise.
const PromiseCtor = Promise;

/** __edgeHostSettle(ticket, outcome): the host's answer to the call that returned `ticket`. */
export function settleHost(ticket, outcome) {
  const waiting = MapGet(pendingHost, ticket);
  if (waiting === undefined) {
    MapSet(pendingHost, ticket, outcome);
    return;
  }
  MapDelete(pendingHost, ticket);
  waiting(outcome);
}

const SETTLED = Symbol('settled');
/** An outcome already at hand, given to hostOutcome in place of a host call's ticket (a warm dynamic worker's answer). */
export const settledOutcome = (outcome) => ({ [SETTLED]: outcome });

/** How many host calls are settled but unread, or read but unsettled (tests). */
export const pendingHostCalls = () => pendingHost.size;

/**
 * The outcome of an asynchronous host callback (sleep, fetch): the callback gives (a
 * promise of) a ticket, and the host settles it with {ok, value | error} through
 * settleHost (HostAsync in node-agent/abi/bridge.ts); or settledOutcome's wrapper.
 */
export async function hostOutcome(pending) {
  const ticket = await pending;
  let r;
  if (typeof ticket === 'object' && ticket !== null) r = ticket[SETTLED];
  else {
    r = MapGet(pendingHost, ticket);
    if (r === undefined) r = await new PromiseCtor((resolve) => { MapSet(pendingHost, ticket, resolve); });
    else MapDelete(pendingHost, ticket);
  }
  if (!r.ok) throw r.exception ? remoteException(r.exception) : new Error(r.error);
  return r.value;
}

/**
 * The iteration members of a class backed by a live list of [name, value] pairs
 * (FormData, URLSearchParams): forEach, keys, values, entries and @@iterator, defined on
 * cls.prototype. listOf(obj) gives the object's list; the iterators walk it live, as the
 * standards want (appending while iterating shows the new pair).
 */
export function mixinPairIteration(cls, listOf, what) {
  function* iterate(list, kind) {
    for (let i = 0; i < list.length; i++) {
      const k = list[i][0];
      const v = list[i][1];
      yield kind === 0 ? k : kind === 1 ? v : [k, v];
    }
  }
  const members = {
    forEach(callback, thisArg = undefined) {
      if (typeof callback !== 'function') throw new TypeError(`${what}.forEach: the callback must be a function`);
      const list = listOf(this);
      for (let i = 0; i < list.length; i++) callback.call(thisArg, list[i][1], list[i][0], this);
    },
    keys() { return iterate(listOf(this), 0); },
    values() { return iterate(listOf(this), 1); },
    entries() { return iterate(listOf(this), 2); },
  };
  for (const [name, fn] of Object.entries(members)) {
    Object.defineProperty(cls.prototype, name, { value: fn, writable: true, enumerable: false, configurable: true });
  }
  Object.defineProperty(cls.prototype, Symbol.iterator, { value: members.entries, writable: true, enumerable: false, configurable: true });
}
