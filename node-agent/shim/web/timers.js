// Timers and queueMicrotask. The isolate has no event loop of its own: a timer is a
// host.sleep() whose outcome the host delivers as a task.
import { host } from '../host.js';
import { reportError } from './console.js';
import { hostOutcome, requireArgs } from './util.js';
import { ReflectApply, SetAdd, SetDelete, SetHas } from './primordials.js';

const resolvedPromise = Promise.resolve();
const MAX_DELAY = 2147483647;
let nextId = 1;
/** Live timer ids; clearing one removes it and cancels the host's timer. */
const live = new Set();

/**
 * A host timer of `ms` for the timer `id`: resolves true when it fires, false when it was
 * cancelled. Throws (a RangeError from the host) when the isolate holds too many timers.
 */
function hostSleep(ms, id) {
  return hostOutcome(host.sleep(ms, id));
}

/** A one-shot wait for shim internals (blockConcurrencyWhile's deadline); not cancellable. */
export function sleep(ms) {
  return hostSleep(ms, nextId++);
}

function schedule(what, callback, ms, args, repeat) {
  if (typeof callback !== 'function') {
    throw new TypeError(`${what}: the callback must be a function (code strings are not evaluated)`);
  }
  let delay = Number(ms);
  if (!(delay > 0)) delay = 0;
  if (delay > MAX_DELAY) delay = MAX_DELAY;
  const id = nextId++;
  const arm = () => {
    hostSleep(delay, id).then((fired) => {
      if (!fired || !SetHas(live, id)) return;
      if (!repeat) SetDelete(live, id);
      try {
        ReflectApply(callback, undefined, args);
      } catch (err) {
        reportError(err);
      }
      if (repeat && SetHas(live, id)) {
        try {
          arm();
        } catch (err) {
          SetDelete(live, id);
          reportError(err);
        }
      }
    }, () => SetDelete(live, id));
  };
  arm();
  SetAdd(live, id);
  return id;
}

export function setTimeout(callback, ms = 0, ...args) {
  return schedule('setTimeout', callback, ms, args, false);
}

export function setInterval(callback, ms = 0, ...args) {
  return schedule('setInterval', callback, ms, args, true);
}

export function clearTimeout(id = undefined) {
  const n = Number(id);
  if (SetDelete(live, n)) host.timerCancel(n);
}

export function clearInterval(id = undefined) {
  clearTimeout(id);
}

export function queueMicrotask(callback) {
  requireArgs(arguments.length, 1, 'queueMicrotask');
  if (typeof callback !== 'function') throw new TypeError('queueMicrotask: the callback must be a function');
  resolvedPromise.then(() => {
    try {
      callback();
    } catch (err) {
      reportError(err);
    }
  });
}

/**
 * Workers' `scheduler.wait(ms, { signal })`: setTimeout as a promise, one host timer,
 * under the same per-isolate bound as setTimeout. Unlike a setTimeout past the bound
 * (which never fires), a wait the host refuses rejects with the host's error, so the
 * awaiting code hears of it.
 */
export const scheduler = {
  wait(ms = 0, options = undefined) {
    const signal = options?.signal;
    if (signal !== undefined && signal !== null && signal.aborted) return Promise.reject(signal.reason);
    let delay = Number(ms);
    if (!(delay > 0)) delay = 0;
    if (delay > MAX_DELAY) delay = MAX_DELAY;
    const id = nextId++;
    return new Promise((resolve, reject) => {
      let onAbort;
      const done = () => { if (onAbort) signal.removeEventListener('abort', onAbort); };
      if (signal !== undefined && signal !== null) {
        onAbort = () => { host.timerCancel(id); reject(signal.reason); };
        signal.addEventListener('abort', onAbort, { once: true });
      }
      hostSleep(delay, id).then((fired) => { done(); if (fired) resolve(); }, (err) => { done(); reject(err); });
    });
  },
};
