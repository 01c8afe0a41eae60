// Durable-Object-style actors inside the isolate (see node-agent/actor-isolate.ts for the
// host's side):
//
//   actorNamespace(binding)   env.<binding> for an actor binding: idFromName, newUniqueId,
//                             idFromString, get(id) -> stub { id, name, fetch(input, init) }.
//                             Ids are made and checked by the host (actorId callback): the
//                             DurableActor's uid never enters the isolate.
//   actorInit(namespace, actor, env)   (actor mode, from __edgeInit) checks the class,
//                             builds `state`, returns the fetch adapter the runtime
//                             dispatches to and the class's handler names.
//   actorEvent(op, arg)       the __edgeActor entry point: 'construct', 'alarm', 'gate'.
//
// A request whose blockConcurrencyWhile (or state.waitUntil) work is still running when
// its response is ready is not done: the adapter adds the wait to ctx.waitUntil, so the
// host settles it (WorkerIsolate.finish) and then asks the gate whether to reset.
//
// state.storage calls the synchronous `storage` host callback (the storage is in memory on
// the host, node-agent/actor-storage.ts) and wraps the outcome in a promise, as the
// Durable Objects API is asynchronous. Values are checked here first, so what cannot be
// stored fails with a DataCloneError naming what it is.
//
// Runs at snapshot time: nothing here calls a host callback (or runs) until used.
import { host } from './host.js';
import { DOMException, INTERNAL, messageOf, platformClassOf } from './web/util.js';
import { actorInternalCall, actorStubFetch } from './actor-fetch.js';
import { utf8Encode } from './web/encoding.js';
import { sleep } from './web/timers.js';
import { hibernationEvent, hibernationState } from './hibernation.js';
import { ArrayPush, ArraySplice, ReflectApply, SetAdd, SetHas } from './web/primordials.js';
import { exportSql, noSql, openSql, sqlStorage } from './sql.js';
import { RPC_CALLBACK_HEADER, RPC_METHOD, rpcInvoke, rpcStub } from './rpc.js';

const RPC_URL = 'https://rpc.internal/';

const freeze = Object.freeze;
const stringify = JSON.stringify;
const isArray = Array.isArray;
const objectKeys = Object.keys;
const objectEntries = Object.entries;
const getPrototypeOf = Object.getPrototypeOf;
const defineProperty = Object.defineProperty;
const PromiseCtor = Promise;
const promiseRace = Promise.race.bind(Promise);
const ErrorCtor = Error;
const TypeErrorCtor = TypeError;
const StringCtor = String;
const DateCtor = Date;
const dateGetTime = Date.prototype.getTime;
const WeakMapCtor = WeakMap;
const WeakMapGet = WeakMap.prototype.get;
const WeakMapSet = WeakMap.prototype.set;
const SetCtor = Set;
const MapCtor = Map;
const mapEntries = Map.prototype.entries;
const setValues = Set.prototype.values;
const noop = () => {};


function errorText(err) {
  try {
    return StringCtor(err !== null && typeof err === 'object' && typeof err.stack === 'string' ? err.stack : err);
  } catch {
    return 'an error that cannot be printed';
  }
}

// ---- ids and stubs ----------------------------------------------------------------

/** id object -> { hex, name, binding } (the binding that made or checked it). */
const idData = new WeakMapCtor();

class DurableObjectId {
  constructor(key, hex, name, binding) {
    if (key !== INTERNAL) throw new TypeErrorCtor('Illegal constructor: ids are made by idFromName(), newUniqueId() or idFromString()');
    if (name !== undefined) defineProperty(this, 'name', { value: name, enumerable: true });
    ReflectApply(WeakMapSet, idData, [this, { hex, name, binding }]);
    freeze(this);
  }

  toString() {
    const d = ReflectApply(WeakMapGet, idData, [this]);
    if (!d) throw new TypeErrorCtor('Illegal invocation');
    return d.hex;
  }

  equals(other) {
    const a = ReflectApply(WeakMapGet, idData, [this]);
    const b = other !== null && typeof other === 'object' ? ReflectApply(WeakMapGet, idData, [other]) : undefined;
    return a !== undefined && b !== undefined && a.hex === b.hex;
  }
}
freeze(DurableObjectId.prototype);

function idFromRecord(record, binding) {
  return new DurableObjectId(INTERNAL, StringCtor(record.id), record.name === undefined ? undefined : StringCtor(record.name), binding);
}

/** Calls the actorId callback; a refusal becomes a TypeError naming the method. */
function hostId(binding, method, kind, value) {
  try {
    return host.actorId(binding, kind, value);
  } catch (err) {
    throw new TypeErrorCtor(`env.${binding}.${method}(): ${messageOf(err)}`);
  }
}

class DurableObjectStub {
  constructor(key, binding, id, data) {
    if (key !== INTERNAL) throw new TypeErrorCtor('Illegal constructor: stubs are made by get(id)');
    defineProperty(this, 'id', { value: id, enumerable: true });
    defineProperty(this, 'name', { value: data.name, enumerable: true });
    const hex = data.hex;
    const name = data.name === undefined ? null : data.name;
    defineProperty(this, 'fetch', {
      enumerable: true,
      // Bodies stream both ways (actor-fetch.js).
      value: function fetch(input, init = undefined) {
        return actorStubFetch(binding, hex, name, input, init);
      },
    });
    freeze(this);
  }
}
freeze(DurableObjectStub.prototype);

// ---- JS RPC (see rpc.js) -------------------------------------------------------------

/** The stub get(id) returns: its id, name and fetch, and any other name an RPC method. */
function rpcStubOf(binding, stub, data) {
  const hex = data.hex;
  const name = data.name === undefined ? null : data.name;
  const send = async (text, callbacks) => {
    const result = await actorInternalCall(binding, hex, name, {
      url: RPC_URL, method: RPC_METHOD, headers: callbacks ? [[RPC_CALLBACK_HEADER, '1']] : [], body: utf8Encode(text),
    });
    if (result.status !== 200) throw new ErrorCtor(`env.${binding}: the RPC call failed: ${result.text}`);
    return result.text;
  };
  return rpcStub(stub, send);
}

/** An RPC call on this actor (the adapter's rpc): runs like a request, on the instance. */
async function actorRpc(text, ctx, _url, token) {
  const instance = actor.instance;
  if (instance === null) throw new ErrorCtor(`actor ${actor.className}: an RPC call arrived before the instance was constructed`);
  const answer = await rpcInvoke(instance, text, token);
  if (outstanding !== 0) ctx.waitUntil(gate());
  return answer;
}

/** env.<binding> for an actor namespace binding. */
export function actorNamespace(binding) {
  const ns = {
    idFromName(name) {
      if (arguments.length < 1) throw new TypeErrorCtor(`env.${binding}.idFromName(): a name is required`);
      return idFromRecord(hostId(binding, 'idFromName', 'name', `${name}`), binding);
    },
    newUniqueId() {
      return idFromRecord(hostId(binding, 'newUniqueId', 'unique', null), binding);
    },
    idFromString(hex) {
      if (typeof hex !== 'string') throw new TypeErrorCtor(`env.${binding}.idFromString(): the id must be a string`);
      return idFromRecord(hostId(binding, 'idFromString', 'string', hex), binding);
    },
    get(id) {
      const data = id !== null && typeof id === 'object' ? ReflectApply(WeakMapGet, idData, [id]) : undefined;
      if (data === undefined) {
        throw new TypeErrorCtor(`env.${binding}.get(): expected an id made by idFromName(), newUniqueId() or idFromString(), not ${typeof id === 'string' ? 'a string' : typeof id}`);
      }
      // An id made by another binding may name another DurableActor: the host checks it.
      if (data.binding !== binding) hostId(binding, 'get', 'string', data.hex);
      return rpcStubOf(binding, new DurableObjectStub(INTERNAL, binding, id, data), data);
    },
    getByName(name, options = undefined) {
      return ns.get(ns.idFromName(name), options);
    },
  };
  return freeze(ns);
}

// ---- storage ------------------------------------------------------------------------

const dataCloneError = (what, desc) => new DOMException(`${what}: ${desc} could not be cloned.`, 'DataCloneError');

/** Throws a DataCloneError for what structured clone refuses (functions, symbols, platform objects...). */
function checkCloneable(value, what) {
  const seen = new SetCtor();
  const walk = (v) => {
    const t = typeof v;
    if (t === 'function') throw dataCloneError(what, v.name ? `function ${v.name}` : 'a function');
    if (t === 'symbol') throw dataCloneError(what, 'a symbol');
    if (v === null || t !== 'object') return;
    if (SetHas(seen, v)) return;
    SetAdd(seen, v);
    if (v instanceof PromiseCtor) throw dataCloneError(what, '#<Promise>');
    if (v instanceof WeakMapCtor || v instanceof WeakSet || (typeof WeakRef === 'function' && v instanceof WeakRef)) throw dataCloneError(what, `#<${getPrototypeOf(v) === WeakSet.prototype ? 'WeakSet' : v instanceof WeakMapCtor ? 'WeakMap' : 'WeakRef'}>`);
    const platform = platformClassOf(v);
    if (platform) throw dataCloneError(what, `#<${platform.name}>`);
    if (v instanceof ArrayBuffer || ArrayBuffer.isView(v) || v instanceof DateCtor || v instanceof RegExp || v instanceof ErrorCtor) return;
    if (v instanceof MapCtor) {
      for (const [k, x] of ReflectApply(mapEntries, v, [])) { walk(k); walk(x); }
      return;
    }
    if (v instanceof SetCtor) {
      for (const x of ReflectApply(setValues, v, [])) walk(x);
      return;
    }
    const keys = objectKeys(v);
    for (let i = 0; i < keys.length; i++) walk(v[keys[i]]);
  };
  walk(value);
}

function keyOf(key, what) {
  if (typeof key === 'string') return key;
  if (typeof key === 'symbol') throw new TypeErrorCtor(`${what}: a key cannot be a symbol`);
  return `${key}`;
}

function keysOf(keys, what) {
  const out = [];
  for (let i = 0; i < keys.length; i++) ArrayPush(out, keyOf(keys[i], what));
  return out;
}

/** The storage callback; isolated-vm's own clone failures become DataCloneErrors too. */
function call(what, op, a, b) {
  try {
    return host.storage(op, a, b);
  } catch (err) {
    const message = messageOf(err);
    if (/could not be cloned/.test(message)) throw new DOMException(`${what}: ${message}`, 'DataCloneError');
    if (err instanceof ErrorCtor) throw err;
    throw new ErrorCtor(message);
  }
}

function listOptions(options) {
  if (options === undefined || options === null) return {};
  if (typeof options !== 'object') throw new TypeErrorCtor('storage.list(): options must be an object');
  const out = {};
  for (const name of ['start', 'startAfter', 'end', 'prefix']) {
    const v = options[name];
    if (v !== undefined) out[name] = keyOf(v, 'storage.list()');
  }
  if (options.reverse !== undefined) out.reverse = !!options.reverse;
  if (options.limit !== undefined) out.limit = options.limit;
  return out;
}

function alarmTime(time) {
  if (time instanceof DateCtor) return ReflectApply(dateGetTime, time, []);
  if (typeof time === 'number') return time;
  throw new TypeErrorCtor('storage.setAlarm(): the time must be a Date or a number of milliseconds since the epoch');
}

/**
 * The storage methods; `guard(what)` runs before each (a transaction's methods throw once
 * it is over or rolled back). canAlarm() says whether the class has an alarm() handler.
 */
function storageMethods(guard, canAlarm) {
  return {
    async get(keys) {
      guard('get');
      if (isArray(keys)) return call('storage.get()', 'getMany', keysOf(keys, 'storage.get()'));
      return call('storage.get()', 'get', keyOf(keys, 'storage.get()'));
    },
    async put(keyOrEntries, value = undefined) {
      guard('put');
      if (keyOrEntries !== null && typeof keyOrEntries === 'object' && !isArray(keyOrEntries)) {
        const entries = objectEntries(keyOrEntries);
        for (let i = 0; i < entries.length; i++) checkCloneable(entries[i][1], `storage.put(): the value for key ${stringify(entries[i][0])}`);
        call('storage.put()', 'putMany', entries);
        return;
      }
      const key = keyOf(keyOrEntries, 'storage.put()');
      checkCloneable(value, `storage.put(): the value for key ${stringify(key)}`);
      call('storage.put()', 'put', key, value);
    },
    async delete(keys) {
      guard('delete');
      if (isArray(keys)) return call('storage.delete()', 'deleteMany', keysOf(keys, 'storage.delete()'));
      return call('storage.delete()', 'delete', keyOf(keys, 'storage.delete()'));
    },
    async list(options = undefined) {
      guard('list');
      return call('storage.list()', 'list', listOptions(options));
    },
    async getAlarm() {
      guard('getAlarm');
      return call('storage.getAlarm()', 'getAlarm');
    },
    async setAlarm(time) {
      guard('setAlarm');
      const t = alarmTime(time);
      if (!canAlarm()) throw new TypeErrorCtor('storage.setAlarm(): the actor class has no alarm() handler to call');
      call('storage.setAlarm()', 'setAlarm', t);
    },
    async deleteAlarm() {
      guard('deleteAlarm');
      call('storage.deleteAlarm()', 'setAlarm', null);
    },
  };
}

function makeStorage(canAlarm) {
  const base = storageMethods(noop, canAlarm);
  return freeze({
    ...base,
    async deleteAll() {
      call('storage.deleteAll()', 'deleteAll');
    },
    /**
     * The closure's writes apply together or not at all: a throw (the transaction()
     * promise rejects with it) or txn.rollback() undoes them all. Writes are savepoints in
     * the host's record, so a rollback also undoes writes made outside the transaction
     * while it was open (run concurrent work after it).
     */
    async transaction(closure) {
      if (typeof closure !== 'function') throw new TypeErrorCtor('storage.transaction(): the argument must be a function');
      const token = call('storage.transaction()', 'txnBegin');
      let state = 'open';
      const guard = (what) => {
        if (state === 'rolledback') throw new ErrorCtor(`txn.${what}(): the transaction was rolled back`);
        if (state === 'over') throw new ErrorCtor(`txn.${what}(): the transaction is already over`);
      };
      const txn = freeze({
        ...storageMethods(guard, canAlarm),
        rollback() {
          if (state === 'over') throw new ErrorCtor('txn.rollback(): the transaction is already over');
          if (state === 'rolledback') return;
          state = 'rolledback';
          call('txn.rollback()', 'txnRollback', token);
        },
      });
      let value;
      try {
        value = await closure(txn);
      } catch (err) {
        if (state === 'open') {
          state = 'rolledback';
          call('storage.transaction()', 'txnRollback', token);
        }
        state = 'over';
        throw err;
      }
      if (state === 'open') call('storage.transaction()', 'txnCommit', token);
      state = 'over';
      return value;
    },
    /** Writes are committed by the host when the event ends (the output gate): nothing to wait for here. */
    async sync() {},
  });
}

// ---- the actor instance -----------------------------------------------------------

let actor = null; // { className, cls, instance, state, env, workerName }
/** blockConcurrencyWhile and state.waitUntil promises not settled yet. */
let outstanding = 0;
/** Resolved (with the reset reason) when `outstanding` drops to 0. */
const gateWaiters = [];
/** Why the actor must be reset (a blockConcurrencyWhile callback threw or timed out), or null. */
let broken = null;

/** Counts `promise` (which never rejects) as outstanding until it settles. */
function track(promise) {
  outstanding += 1;
  promise.then(() => {
    outstanding -= 1;
    if (outstanding !== 0) return;
    const waiting = ArraySplice(gateWaiters, 0, gateWaiters.length);
    for (let i = 0; i < waiting.length; i++) waiting[i](broken);
  });
}

/** Settles, with the reset reason or null, once no blockConcurrencyWhile or waitUntil work is outstanding. */
function gate() {
  if (outstanding === 0) return PromiseCtor.resolve(broken);
  return new PromiseCtor((resolve) => ArrayPush(gateWaiters, resolve));
}

function isConstructor(v) {
  return typeof v === 'function' && v.prototype !== undefined && v.prototype !== null && typeof v.prototype === 'object';
}

/**
 * Actor mode (called by __edgeInit with options.actor = { className, id, name,
 * blockTimeoutMs }): checks the exported class, builds `state`, and returns the fetch
 * adapter the runtime dispatches requests to and the class's handler names.
 */
export function actorInit(namespace, options, env, workerName) {
  const className = StringCtor(options.className);
  const exportsList = objectKeys(namespace).join(', ') || 'nothing';
  if (!(className in namespace)) {
    throw new ErrorCtor(`the DurableActor class ${className} is not exported by the bundle (it exports ${exportsList})`);
  }
  const cls = namespace[className];
  if (!isConstructor(cls)) {
    throw new ErrorCtor(`the export ${className} is not a class (it is ${cls === null ? 'null' : typeof cls}); a DurableActor needs export class ${className} { constructor(state, env) {} async fetch(request) {} }`);
  }
  const handlers = [];
  for (const k of ['fetch', 'alarm', 'webSocketMessage', 'webSocketClose', 'webSocketError']) {
    if (typeof cls.prototype[k] === 'function') ArrayPush(handlers, k);
  }
  const blockTimeoutMs = Number(options.blockTimeoutMs) > 0 ? Number(options.blockTimeoutMs) : 30_000;
  const canAlarm = () => typeof (actor && actor.instance ? actor.instance : cls.prototype).alarm === 'function';
  const state = freeze({
    ...hibernationState(),
    id: new DurableObjectId(INTERNAL, StringCtor(options.id), options.name === undefined || options.name === null ? undefined : StringCtor(options.name), null),
    // SQLite-backed (spec.storage.backend: sqlite): the database is opened by 'construct'.
    storage: options.sqlite ? sqlStorage(makeStorage(canAlarm)) : noSql(makeStorage(canAlarm)),
    blockConcurrencyWhile(callback) {
      return blockConcurrencyWhile(callback, blockTimeoutMs);
    },
    waitUntil(promise) {
      track(PromiseCtor.resolve(promise).then(noop, (err) => {
        try { host.log('error', `actor ${workerName}: state.waitUntil promise rejected: ${errorText(err)}`); } catch { /* logging never breaks the actor */ }
      }));
    },
  });
  actor = { className, cls, instance: null, state, env, workerName, sqlite: !!options.sqlite };
  // The runtime dispatches requests to this as to a default export's fetch(request, env, ctx).
  const adapter = {
    rpc: actorRpc,
    async fetch(request, _env, ctx) {
      const instance = actor.instance;
      if (instance === null) throw new ErrorCtor(`actor ${className}: a request arrived before the instance was constructed`);
      if (typeof instance.fetch !== 'function') throw new TypeErrorCtor(`the DurableActor class ${className} has no fetch() method`);
      const response = await instance.fetch(request);
      // blockConcurrencyWhile work still running: the request is not done until it settles.
      if (outstanding !== 0) ctx.waitUntil(gate());
      return response;
    },
  };
  return { adapter, handlers };
}

function blockConcurrencyWhile(callback, timeoutMs) {
  if (typeof callback !== 'function') return PromiseCtor.reject(new TypeErrorCtor('state.blockConcurrencyWhile(): the argument must be a function'));
  let result;
  try {
    result = PromiseCtor.resolve(callback());
  } catch (err) {
    result = PromiseCtor.reject(err);
  }
  let expired = false;
  const timeout = new PromiseCtor((_resolve, reject) => {
    sleep(timeoutMs).then((fired) => {
      if (!fired) return;
      expired = true;
      reject(new ErrorCtor(`state.blockConcurrencyWhile(): the callback did not settle within ${timeoutMs / 1000} s`));
    }, noop);
  });
  const tracked = promiseRace([result, timeout]).then(undefined, (err) => {
    if (broken === null) {
      broken = expired ? messageOf(err) : `state.blockConcurrencyWhile() callback threw: ${errorText(err)}`;
    }
    throw err;
  });
  track(tracked.then(noop, noop));
  return tracked;
}

/**
 * The __edgeActor entry point. Resolves with { reset, error }: reset is the reason the
 * actor must be reset (null when it need not be), error what the event's own code threw
 * (a constructor or alarm() that threw), both strings or null.
 *   construct          new Class(state, env), then the gate
 *   alarm {retryCount, isRetry}   instance.alarm(info), then the gate
 *   gate               waits for blockConcurrencyWhile / waitUntil work
 */
export async function actorEvent(op, arg) {
  if (actor === null) throw new ErrorCtor('edge-isolates shim: this isolate is not an actor');
  let error = null;
  if (op === 'construct') {
    if (actor.instance !== null) throw new ErrorCtor('edge-isolates shim: the actor is already constructed');
    try {
      actor.instance = new actor.cls(actor.state, actor.env);
    } catch (err) {
      error = `the constructor of ${actor.className} threw: ${errorText(err)}`;
    }
  } else if (op === 'alarm') {
    const instance = actor.instance;
    if (instance === null) throw new ErrorCtor('edge-isolates shim: alarm before the actor was constructed');
    if (typeof instance.alarm !== 'function') {
      error = `the DurableActor class ${actor.className} has no alarm() handler`;
    } else {
      const info = freeze({ retryCount: Number(arg && arg.retryCount) || 0, isRetry: !!(arg && arg.isRetry) });
      try {
        await instance.alarm(info);
      } catch (err) {
        error = `alarm() threw: ${errorText(err)}`;
      }
    }
  } else if (op === 'sqlOpen') {
    if (actor.sqlite) await openSql();
  } else if (op === 'sqlExport') {
    exportSql();
  } else if (op === 'ws') {
    if (actor.instance === null) throw new ErrorCtor('edge-isolates shim: a WebSocket event before the actor was constructed');
    error = await hibernationEvent(actor.instance, actor.className, arg, errorText);
  } else if (op !== 'gate') {
    throw new ErrorCtor(`edge-isolates shim: unknown actor event ${StringCtor(op)}`);
  }
  const reset = await gate();
  return { reset, error };
}
