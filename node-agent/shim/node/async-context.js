// AsyncLocalStorage without V8's AsyncContext or a PromiseHook (isolated-vm exposes
// neither): the current context is one variable, and every place the platform schedules a
// continuation captures it when the continuation is scheduled and restores it when the
// continuation runs. Wrapped here: Promise.prototype.then (so also catch and finally,
// which call then, and every `await` of a thenable that is not a native promise),
// queueMicrotask, setTimeout and setInterval, and process.nextTick (process.js).
// `await` of a native promise does not call then: `edge deploy` with nodejs_compat bundles
// with async functions lowered to generators (esbuild's __async helper resumes them
// through Promise.prototype.then), which is what carries a context across `await`.
// Code that was not bundled that way loses the context after its first native `await`.
// Runs only in isolates of workers with nodejs_compat.

const { apply } = Reflect;
const { freeze } = Object;

/** The current context: a frozen Map of AsyncLocalStorage -> store; ROOT when none. */
const ROOT = freeze(new Map());
let current = ROOT;

export function currentFrame() { return current; }

/** Runs fn with `frame` as the current context and restores the previous one after. */
export function runInFrame(frame, fn, thisArg, args) {
  const prev = current;
  current = frame;
  try {
    return apply(fn, thisArg, args);
  } finally {
    current = prev;
  }
}

/** fn bound to the context current now (identity when there is no context to carry). */
export function bindCurrent(fn) {
  if (typeof fn !== 'function') return fn;
  const frame = current;
  if (frame === ROOT) {
    // A continuation scheduled outside any run() still must not inherit a context another
    // request left behind (enterWith): it runs in ROOT.
    return function rootBound(...args) { return runInFrame(ROOT, fn, this, args); };
  }
  return function contextBound(...args) { return runInFrame(frame, fn, this, args); };
}

let installed = false;
/** Promise.prototype.then as V8 made it, before installPropagation wrapped it. */
let origThen = Promise.prototype.then;
/** Patches the scheduling points; once per isolate, before the worker's code runs. */
export function installPropagation(g) {
  if (installed) return;
  installed = true;
  const proto = g.Promise.prototype;
  const then = proto.then;
  origThen = then;
  // Same name and arity as the original: code that inspects it sees a method like it.
  const wrapped = {
    then(onFulfilled, onRejected) {
      return apply(then, this, [bindCurrent(onFulfilled), bindCurrent(onRejected)]);
    },
  }.then;
  Object.defineProperty(proto, 'then', { value: wrapped, writable: true, enumerable: false, configurable: true });
  const qm = g.queueMicrotask;
  g.queueMicrotask = function queueMicrotask(cb) { return apply(qm, this, [typeof cb === 'function' ? bindCurrent(cb) : cb]); };
  for (const name of ['setTimeout', 'setInterval']) {
    const orig = g[name];
    g[name] = { [name](cb, ...rest) { return apply(orig, this, [typeof cb === 'function' ? bindCurrent(cb) : cb, ...rest]); } }[name];
  }
}

export class AsyncLocalStorage {
  #enabled = true;
  static bind(fn) { return bindCurrent(fn); }
  static snapshot() {
    const frame = current;
    return (fn, ...args) => runInFrame(frame, fn, undefined, args);
  }
  getStore() { return this.#enabled ? current.get(this) : undefined; }
  run(store, fn, ...args) {
    const next = new Map(current);
    next.set(this, store);
    this.#enabled = true;
    return runInFrame(freeze(next), fn, undefined, args);
  }
  exit(fn, ...args) {
    if (!current.has(this)) return apply(fn, undefined, args);
    const next = new Map(current);
    next.delete(this);
    return runInFrame(freeze(next), fn, undefined, args);
  }
  /** Node: the store for the rest of this synchronous execution and what it schedules. */
  enterWith(store) {
    const next = new Map(current);
    next.set(this, store);
    current = freeze(next);
    this.#enabled = true;
    // Back to ROOT once this turn's synchronous code is done, so the next event of the
    // isolate (another request) never starts inside it.
    resetSoon();
  }
  disable() { this.#enabled = false; }
}

let resetQueued = false;
const nativeResolve = Promise.resolve.bind(Promise);
function resetSoon() {
  if (resetQueued) return;
  resetQueued = true;
  // The unwrapped then: a wrapped one would restore the entered context after the reset.
  apply(origThen, nativeResolve(), [() => { resetQueued = false; current = ROOT; }]);
}

/** Node's AsyncResource: a context captured at construction, entered by runInAsyncScope. */
export class AsyncResource {
  #frame = current;
  constructor(type) { this.type = String(type); }
  runInAsyncScope(fn, thisArg, ...args) { return runInFrame(this.#frame, fn, thisArg, args); }
  bind(fn) { const frame = this.#frame; return function bound(...args) { return runInFrame(frame, fn, this, args); }; }
  static bind(fn, type) { return new AsyncResource(type ?? 'bound-anonymous-fn').bind(fn); }
  emitDestroy() { return this; }
  asyncId() { return 0; }
  triggerAsyncId() { return 0; }
}

export function executionAsyncId() { return 0; }
export function triggerAsyncId() { return 0; }
export function createHook() { return { enable() { return this; }, disable() { return this; } }; }
