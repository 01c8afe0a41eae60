// Event and EventTarget, as much as AbortSignal and worker code need: listeners with
// once/signal/capture options, handleEvent objects, cancelation, no propagation path.
import { DOMException, requireArgs, isObject } from './util.js';
import { reportError } from './console.js';
import { ArrayFindIndex, ArrayPush, ArraySlice, ArraySome, ArraySplice, MapGet, MapSet } from './primordials.js';

let beginDispatch;
let endDispatch;
let stopped;
/** While set, the promises listeners return are collected here (see collectListenerResults). */
let collector = null;

/**
 * Runs fn, collecting the promises that event listeners return meanwhile: the runtime
 * waits for them before it counts a WebSocket event as handled.
 */
export function collectListenerResults(list, fn) {
  const previous = collector;
  collector = list;
  try {
    fn();
  } finally {
    collector = previous;
  }
}

export class Event {
  #type;
  #bubbles;
  #cancelable;
  #composed;
  #timeStamp = Date.now();
  #defaultPrevented = false;
  #stop = false;
  #stopImmediate = false;
  #target = null;
  #currentTarget = null;
  #dispatching = false;

  constructor(type, init = undefined) {
    requireArgs(arguments.length, 1, 'Event');
    this.#type = String(type);
    this.#bubbles = Boolean(init?.bubbles);
    this.#cancelable = Boolean(init?.cancelable);
    this.#composed = Boolean(init?.composed);
  }

  get type() { return this.#type; }
  get target() { return this.#target; }
  get srcElement() { return this.#target; }
  get currentTarget() { return this.#currentTarget; }
  get eventPhase() { return this.#dispatching ? 2 : 0; }
  get bubbles() { return this.#bubbles; }
  get cancelable() { return this.#cancelable; }
  get composed() { return this.#composed; }
  get defaultPrevented() { return this.#defaultPrevented; }
  get returnValue() { return !this.#defaultPrevented; }
  get isTrusted() { return false; }
  get timeStamp() { return this.#timeStamp; }
  get cancelBubble() { return this.#stop; }
  set cancelBubble(v) { if (v) this.#stop = true; }

  composedPath() { return this.#dispatching && this.#target ? [this.#target] : []; }
  preventDefault() { if (this.#cancelable) this.#defaultPrevented = true; }
  stopPropagation() { this.#stop = true; }
  stopImmediatePropagation() { this.#stop = this.#stopImmediate = true; }

  static {
    beginDispatch = (e, target) => {
      if (e.#dispatching) throw new DOMException('The event is already being dispatched', 'InvalidStateError');
      e.#dispatching = true;
      e.#target = e.#currentTarget = target;
      e.#stop = e.#stopImmediate = false;
    };
    endDispatch = (e) => {
      e.#dispatching = false;
      e.#currentTarget = null;
    };
    stopped = (e) => e.#stopImmediate;
  }
}

for (const [name, value] of [['NONE', 0], ['CAPTURING_PHASE', 1], ['AT_TARGET', 2], ['BUBBLING_PHASE', 3]]) {
  Object.defineProperty(Event, name, { value, enumerable: true });
  Object.defineProperty(Event.prototype, name, { value, enumerable: true });
}

export class CustomEvent extends Event {
  #detail;

  constructor(type, init = undefined) {
    requireArgs(arguments.length, 1, 'CustomEvent');
    super(type, init);
    this.#detail = init?.detail ?? null;
  }

  get detail() { return this.#detail; }
}

function listenerOptions(options) {
  if (!isObject(options)) return { capture: Boolean(options), once: false, passive: false, signal: undefined };
  return { capture: Boolean(options.capture), once: Boolean(options.once), passive: Boolean(options.passive), signal: options.signal };
}

export class EventTarget {
  #listeners = new Map();

  addEventListener(type, callback, options = undefined) {
    requireArgs(arguments.length, 2, 'EventTarget.addEventListener');
    if (callback === null || callback === undefined) return;
    if (typeof callback !== 'function' && !isObject(callback)) throw new TypeError('addEventListener: the listener must be a function or an object');
    const { capture, once, passive, signal } = listenerOptions(options);
    if (signal?.aborted) return;
    type = String(type);
    let list = MapGet(this.#listeners, type);
    if (!list) MapSet(this.#listeners, type, (list = []));
    if (ArraySome(list, (l) => l.callback === callback && l.capture === capture)) return;
    ArrayPush(list, { callback, capture, once, passive, removed: false });
    if (signal) signal.addEventListener('abort', () => this.removeEventListener(type, callback, { capture }), { once: true });
  }

  removeEventListener(type, callback, options = undefined) {
    requireArgs(arguments.length, 2, 'EventTarget.removeEventListener');
    const list = MapGet(this.#listeners, String(type));
    if (!list) return;
    const capture = listenerOptions(options).capture;
    const i = ArrayFindIndex(list, (l) => l.callback === callback && l.capture === capture);
    if (i >= 0) {
      list[i].removed = true;
      ArraySplice(list, i, 1);
    }
  }

  dispatchEvent(event) {
    requireArgs(arguments.length, 1, 'EventTarget.dispatchEvent');
    if (!(event instanceof Event)) throw new TypeError('dispatchEvent: the argument must be an Event');
    beginDispatch(event, this);
    try {
      const list = MapGet(this.#listeners, event.type);
      if (list) {
        const snapshot = ArraySlice(list);
        for (let i = 0; i < snapshot.length; i++) {
          const l = snapshot[i];
          if (l.removed) continue;
          if (l.once) this.removeEventListener(event.type, l.callback, { capture: l.capture });
          try {
            const result = typeof l.callback === 'function' ? l.callback.call(this, event) : l.callback.handleEvent(event);
            if (collector !== null && isObject(result) && typeof result.then === 'function') ArrayPush(collector, result);
          } catch (err) {
            reportError(err);
          }
          if (stopped(event)) break;
        }
      }
    } finally {
      endDispatch(event);
    }
    return !event.defaultPrevented;
  }
}
