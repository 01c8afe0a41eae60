// AbortController and AbortSignal (with abort(), timeout() and any()).
import { DOMException, INTERNAL, illegalConstructor, requireArgs } from './util.js';
import { Event, EventTarget } from './event.js';
import { setTimeout } from './timers.js';
import { ArrayFind, ArrayPush } from './primordials.js';

let signalAbort;

export class AbortSignal extends EventTarget {
  #aborted = false;
  #reason = undefined;
  #onabort = null;
  #handlerAdded = false;

  constructor(key) {
    if (key !== INTERNAL) illegalConstructor();
    super();
  }

  get aborted() { return this.#aborted; }
  get reason() { return this.#reason; }

  throwIfAborted() {
    if (this.#aborted) throw this.#reason;
  }

  get onabort() { return this.#onabort; }

  set onabort(handler) {
    this.#onabort = typeof handler === 'function' || (handler !== null && typeof handler === 'object') ? handler : null;
    if (!this.#handlerAdded) {
      // An event handler attribute keeps the position of its first assignment among listeners.
      this.#handlerAdded = true;
      this.addEventListener('abort', (e) => {
        const h = this.#onabort;
        if (typeof h === 'function') h.call(this, e);
      });
    }
  }

  static abort(reason = undefined) {
    const s = new AbortSignal(INTERNAL);
    signalAbort(s, reason);
    return s;
  }

  static timeout(ms) {
    requireArgs(arguments.length, 1, 'AbortSignal.timeout');
    const delay = Number(ms);
    if (!Number.isFinite(delay) || delay < 0) throw new TypeError(`AbortSignal.timeout: ${ms} is not a non-negative number of milliseconds`);
    const s = new AbortSignal(INTERNAL);
    setTimeout(() => signalAbort(s, new DOMException('The operation timed out.', 'TimeoutError')), delay);
    return s;
  }

  static any(signals) {
    requireArgs(arguments.length, 1, 'AbortSignal.any');
    const list = [];
    for (const x of signals) {
      if (!(x instanceof AbortSignal)) throw new TypeError('AbortSignal.any: every item must be an AbortSignal');
      ArrayPush(list, x);
    }
    const s = new AbortSignal(INTERNAL);
    const done = ArrayFind(list, (x) => x.aborted);
    if (done) signalAbort(s, done.reason);
    else for (let i = 0; i < list.length; i++) list[i].addEventListener('abort', () => signalAbort(s, list[i].reason), { once: true });
    return s;
  }

  static {
    signalAbort = (s, reason) => {
      if (s.#aborted) return;
      s.#aborted = true;
      s.#reason = reason === undefined ? new DOMException('This operation was aborted', 'AbortError') : reason;
      s.dispatchEvent(new Event('abort'));
    };
  }
}

/** Aborts a signal that has no controller the runtime can reach (an incoming request's). */
export const abortSignal = (s, reason) => signalAbort(s, reason);

export class AbortController {
  #signal = new AbortSignal(INTERNAL);

  get signal() { return this.#signal; }

  abort(reason = undefined) {
    signalAbort(this.#signal, reason);
  }
}
