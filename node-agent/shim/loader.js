// Worker Loader bindings (Dynamic Workers): env.<binding>.load(code) and get(id, callback)
// return a WorkerStub whose getEntrypoint(name?) is a stub like a service binding's (fetch()
// and RPC), calling a dynamic worker the host runs in an isolate of its own on this agent
// (node-agent/bindings/worker-loader.ts). What crosses to the host is data: the modules
// (ArrayBuffers as they are), env's plain values encoded as an RPC message is (structured
// clone), and for each of the parent's own bindings passed in env, its binding name: the
// dynamic worker gets that binding, nothing else of the parent.
//
// Runs at snapshot time: nothing here calls a host callback until used.
import { host } from './host.js';
import { hostOutcome, settledOutcome } from './web/util.js';
import { DOMException } from './web/util.js';
import { encode, decode, lendToEnv, envRefStub } from './rpc.js';
import { RpcTarget } from './workers-module.js';
import { internalStub } from './service.js';

const freeze = Object.freeze;
const objectKeys = Object.keys;
const isArray = Array.isArray;
const stringify = JSON.stringify;
const parse = JSON.parse;
const StringCtor = String;
const TypeErrorCtor = TypeError;
const ArrayBufferCtor = ArrayBuffer;
const isView = ArrayBuffer.isView;
const MapCtor = Map;
const WeakMapCtor = WeakMap;

/** The parent's binding objects (env.X) -> their binding names: what may be passed as a capability. */
const bindingNames = new WeakMapCtor();
/** Records env.<name> as one of this worker's bindings (index.js, as it builds env). */
export function registerBinding(value, name) {
  bindingNames.set(value, name);
  return value;
}
/** Service bindings among them: what globalOutbound may name. */
const serviceBindings = new WeakMapCtor();
export function registerServiceBinding(value, name) {
  serviceBindings.set(value, name);
  return registerBinding(value, name);
}

const MODULE_KINDS = ['js', 'cjs', 'text', 'data', 'json', 'wasm', 'py'];

/** A module of WorkerCode.modules as [type, content]: a string's type comes from the name's extension, as on Workers. */
function moduleEntry(name, value) {
  if (typeof value === 'string') {
    if (/\.(m?js)$/.test(name)) return ['js', value];
    if (/\.cjs$/.test(name)) return ['cjs', value];
    if (/\.json$/.test(name)) return ['json', value];
    if (/\.py$/.test(name)) throw new TypeErrorCtor(`WorkerCode.modules["${name}"]: Python modules are not supported here`);
    return ['text', value];
  }
  if (value === null || typeof value !== 'object') throw new TypeErrorCtor(`WorkerCode.modules["${name}"] must be a string or an object with one of ${MODULE_KINDS.join(', ')}`);
  const kinds = objectKeys(value).filter((k) => MODULE_KINDS.includes(k));
  if (kinds.length !== 1) throw new TypeErrorCtor(`WorkerCode.modules["${name}"] must have exactly one of ${MODULE_KINDS.join(', ')}`);
  const kind = kinds[0];
  const v = value[kind];
  if (kind === 'py') throw new TypeErrorCtor(`WorkerCode.modules["${name}"]: Python modules are not supported here`);
  if (kind === 'json') return ['json', stringify(v)];
  if (kind === 'data' || kind === 'wasm') {
    if (v instanceof ArrayBufferCtor) return [kind, v];
    if (isView(v)) return [kind, v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength)];
    throw new TypeErrorCtor(`WorkerCode.modules["${name}"].${kind} must be an ArrayBuffer`);
  }
  if (typeof v !== 'string') throw new TypeErrorCtor(`WorkerCode.modules["${name}"].${kind} must be a string`);
  return [kind, v];
}

const noRefs = (v) => {
  throw new DOMException(`a dynamic worker's env holds plain values, this worker's own bindings, and functions and RpcTargets at its top level; ${typeof v === 'function' ? 'a function' : 'an RpcTarget'} nested in a value cannot be passed there`, 'DataCloneError');
};

const limitOf = (limits, key) => {
  const v = limits[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !(v > 0)) throw new TypeErrorCtor(`WorkerCode.limits.${key} must be a positive number`);
  return v;
};

/** WorkerCode as the host takes it (LoaderCodeSchema in node-agent/abi/bridge.ts). */
function workerCode(code) {
  if (code === null || typeof code !== 'object') throw new TypeErrorCtor('WorkerCode must be an object');
  if (typeof code.compatibilityDate !== 'string') throw new TypeErrorCtor('WorkerCode.compatibilityDate is required (a date, "YYYY-MM-DD")');
  if (typeof code.mainModule !== 'string') throw new TypeErrorCtor('WorkerCode.mainModule is required (the name of a module in modules)');
  if (code.modules === null || typeof code.modules !== 'object') throw new TypeErrorCtor('WorkerCode.modules is required (module name -> content)');
  const flags = code.compatibilityFlags === undefined ? [] : code.compatibilityFlags;
  if (!isArray(flags) || flags.some((f) => typeof f !== 'string')) throw new TypeErrorCtor('WorkerCode.compatibilityFlags must be a list of strings');
  const modules = {};
  for (const name of objectKeys(code.modules)) modules[name] = moduleEntry(name, code.modules[name]);
  const values = {};
  const caps = {};
  const refs = {};
  const env = code.env === undefined || code.env === null ? {} : code.env;
  if (typeof env !== 'object') throw new TypeErrorCtor('WorkerCode.env must be an object');
  for (const k of objectKeys(env)) {
    const v = env[k];
    const binding = v !== null && (typeof v === 'object' || typeof v === 'function') ? bindingNames.get(v) : undefined;
    if (binding !== undefined) caps[k] = binding;
    // The dynamic worker calls it here, in this isolate, while this isolate serves a request.
    else if (typeof v === 'function' || v instanceof RpcTarget) refs[k] = [lendToEnv(v), typeof v === 'function'];
    else values[k] = v;
  }
  let outbound = 'default';
  if (code.globalOutbound === null) outbound = 'block';
  else if (code.globalOutbound !== undefined) {
    const name = serviceBindings.get(code.globalOutbound);
    if (name === undefined) throw new TypeErrorCtor('WorkerCode.globalOutbound must be null or one of this worker\'s service bindings (env.<name>)');
    outbound = `service:${name}`;
  }
  const limits = code.limits === undefined || code.limits === null ? {} : code.limits;
  const cpuMs = limitOf(limits, 'cpuMs');
  const subRequests = limitOf(limits, 'subRequests');
  const memoryMiB = limitOf(limits, 'memoryMiB');
  return {
    compatibilityDate: code.compatibilityDate,
    compatibilityFlags: flags.map(StringCtor),
    mainModule: code.mainModule,
    modules,
    values: stringify(encode(values, noRefs)),
    caps,
    refs,
    outbound,
    limits: { ...(cpuMs !== undefined ? { cpuMs } : {}), ...(subRequests !== undefined ? { subRequests } : {}), ...(memoryMiB !== undefined ? { memoryMiB } : {}) },
  };
}

/** load()s made by this isolate: each load's ticket (loaderLoad), by which its stub's calls name it. */
let tickets = 0;

/**
 * A dynamic worker's stub: `handle()` resolves with the host's number for it (a load()'s:
 * -ticket at once, the host waits for the load); `warmCall`, when given, tries the call
 * first (see get()).
 */
function workerStub(binding, handle, warmCall = undefined) {
  return freeze({
    getEntrypoint(name = undefined) {
      if (name !== undefined && name !== null && typeof name !== 'string') throw new TypeErrorCtor('getEntrypoint(name): name must be a string');
      const entrypoint = typeof name === 'string' && name !== 'default' ? name : null;
      const what = `env.${binding} dynamic worker${entrypoint ? ` entrypoint ${entrypoint}` : ''}`;
      if (warmCall === undefined) return internalStub(what, async (init) => host.loaderCall(await handle(), entrypoint, init, false));
      // internalStub settles what call() gives as a host outcome: the settled one is handed on as one.
      return internalStub(what, async (init) => settledOutcome({ ok: true, value: await warmCall(entrypoint, init) }));
    },
  });
}

/** env.<binding> for a Worker Loader binding. */
export function loaderBinding(binding) {
  /** get(id)s loading now in this isolate: id -> the handle's promise (one callback per id at a time). */
  const loading = new MapCtor();
  /**
   * id -> the host's number for the dynamic worker the last get(id) here found or loaded. A
   * call goes straight to it, with no loaderGet round trip first; the host answers null,
   * sending nothing, when it is no longer the warm one (evicted, dead), and the id is looked
   * up again.
   */
  const known = new MapCtor();
  return freeze({
    load(code) {
      // A malformed WorkerCode throws here, as on Workers (the code is read at the call).
      const ticket = ++tickets;
      const pending = hostOutcome(host.loaderLoad(binding, null, workerCode(code), ticket));
      // Nobody may ever call it: a failed load surfaces at the first call (the host answers
      // the call with the load's error), not as an unhandled rejection.
      pending.catch(() => {});
      // Calls name the load by its ticket (the host runs them once it is loaded), so the
      // first one does not wait for the load's answer to come back here first.
      return workerStub(binding, () => -ticket);
    },
    get(id, getCode) {
      if (typeof getCode !== 'function') throw new TypeErrorCtor(`env.${binding}.get(id, callback): callback must be a function returning the WorkerCode`);
      if (id === null) {
        // No id: nothing to cache under; a one-off worker from the callback's code, as load() makes.
        const pending = (async () => hostOutcome(host.loaderLoad(binding, null, workerCode(await getCode()))))();
        pending.catch(() => {});
        return workerStub(binding, () => pending);
      }
      if (typeof id !== 'string' || id.length === 0) throw new TypeErrorCtor(`env.${binding}.get(id, callback): id must be a non-empty string or null`);
      const handle = () => {
        const warm = host.loaderGet(binding, id);
        if (warm !== null) { known.set(id, warm); return warm; }
        let p = loading.get(id);
        if (p === undefined) {
          p = (async () => {
            try {
              const n = await hostOutcome(host.loaderLoad(binding, id, workerCode(await getCode())));
              known.set(id, n);
              return n;
            } finally {
              loading.delete(id);
            }
          })();
          loading.set(id, p);
        }
        return p;
      };
      const warmCall = async (entrypoint, init) => {
        const n = known.get(id);
        if (n !== undefined) {
          const result = await hostOutcome(host.loaderCall(n, entrypoint, init, true));
          if (result !== null) return result;
          if (known.get(id) === n) known.delete(id);
        }
        return hostOutcome(host.loaderCall(await handle(), entrypoint, init, false));
      };
      return workerStub(binding, handle, warmCall);
    },
  });
}

/** A dynamic worker's own env values (WorkerEnv.values), decoded. */
export function envValues(text) {
  return decode(parse(text), noRefs);
}

/** A dynamic worker's stubs for the functions and RpcTargets its caller put in its env (WorkerEnv.refs). */
export function envRefs(refs, into) {
  for (const name of objectKeys(refs.stubs)) {
    const r = refs.stubs[name];
    into[name] = envRefStub(refs.token, r[0], r[1]);
  }
}
