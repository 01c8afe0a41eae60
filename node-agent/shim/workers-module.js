// The `cloudflare:workers` module: DurableObject, WorkerEntrypoint, RpcTarget, env and
// waitUntil. The host compiles a small module re-exporting these from the global named by
// WORKERS_MODULE_GLOBAL (common/builtin-modules.ts), which the load's root module takes
// before any code of the worker runs and hands on, and resolves the worker's import of
// "cloudflare:workers" to it; the classes are the same objects in every module of the isolate.
//
// Runs at snapshot time: nothing here calls a host callback until used.

const freeze = Object.freeze;
const defineProperty = Object.defineProperty;
const TypeErrorCtor = TypeError;
const ReflectGet = Reflect.get;
const ReflectHas = Reflect.has;
const ReflectOwnKeys = Reflect.ownKeys;
const ReflectGetOwnPropertyDescriptor = Reflect.getOwnPropertyDescriptor;
const ProxyCtor = Proxy;

// Explicit resource management's well-known symbols, which Workers has (stubs are
// disposable) and this V8 does not yet: defined once, at snapshot time.
for (const name of ['dispose', 'asyncDispose']) {
  if (typeof Symbol[name] !== 'symbol') defineProperty(Symbol, name, { value: Symbol(`Symbol.${name}`), writable: false, enumerable: false, configurable: false });
}

/** Marks a class whose instances are passed by reference over RPC (a stub), never cloned. */
export class RpcTarget {}

/**
 * The base of a Durable Object class: `this.ctx` (the DurableObjectState) and `this.env`.
 * A derived class that never calls super() fails in the engine itself, as on Workers
 * ("Must call super constructor in derived class...").
 */
export class DurableObject extends RpcTarget {
  constructor(ctx, env) {
    super();
    this.ctx = ctx;
    this.env = env;
  }
}

/** The base of a worker's entrypoints: one instance per event, with `this.ctx` and `this.env`. */
export class WorkerEntrypoint extends RpcTarget {
  constructor(ctx, env) {
    super();
    this.ctx = ctx;
    this.env = env;
  }
}

for (const cls of [RpcTarget, DurableObject, WorkerEntrypoint]) {
  freeze(cls.prototype);
  freeze(cls);
}

/** The base classes' prototypes: RPC looks up methods below them, never on them. */
export const BASE_PROTOTYPES = [RpcTarget.prototype, DurableObject.prototype, WorkerEntrypoint.prototype, Object.prototype];

let currentEnv = null;
let currentWaitUntil = null;

/** Set by the runtime once the worker's env is built (__edgeInit). */
export function setWorkersEnv(env) { currentEnv = env; }

/** Set by the runtime per event: the ctx.waitUntil of the request in flight (null between requests). */
export function setWorkersWaitUntil(fn) { currentWaitUntil = fn; }

const EMPTY = freeze({ __proto__: null });
const envOf = () => currentEnv ?? EMPTY;

// `import { env }` is bound when the module loads, before the env exists (the host builds
// it after evaluation), so the export reads through to it. At the top level it is still
// empty: read env inside a handler.
const env = new ProxyCtor({}, {
  get: (_t, k) => ReflectGet(envOf(), k),
  has: (_t, k) => ReflectHas(envOf(), k),
  ownKeys: () => ReflectOwnKeys(envOf()),
  getOwnPropertyDescriptor: (_t, k) => {
    const d = ReflectGetOwnPropertyDescriptor(envOf(), k);
    // A proxy may not report a non-configurable property its target lacks.
    return d === undefined ? undefined : { value: d.value, writable: false, enumerable: d.enumerable, configurable: true };
  },
  set: () => false,
  defineProperty: () => false,
  deleteProperty: () => false,
});

function waitUntil(promise) {
  if (currentWaitUntil === null) throw new TypeErrorCtor('waitUntil() can only be called while a request is being handled');
  currentWaitUntil(promise);
}

// workerd's loopback bindings to the worker's own exports (`import { exports }`, ctx.exports).
// There are none here: the object exists, empty, so a library that imports it at its top
// level (the Agents SDK does, for sub-agents) loads, and finds no class in it when it looks.
const loopbackExports = freeze({ __proto__: null });

const exportsObject = freeze({ __proto__: null, DurableObject, WorkerEntrypoint, RpcTarget, env, waitUntil, exports: loopbackExports });

/** Defines the global the cloudflare:workers module's exports come from (name: WORKERS_MODULE_GLOBAL). */
export function installWorkersModule(g, name) {
  defineProperty(g, name, { value: exportsObject, writable: false, enumerable: false, configurable: true });
}

/** Whether `cls` is a class extending WorkerEntrypoint. */
export function isEntrypointClass(cls) {
  return typeof cls === 'function' && cls.prototype instanceof WorkerEntrypoint;
}
