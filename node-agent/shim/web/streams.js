// WHATWG Streams: ReadableStream (default readers; no BYOB), WritableStream and
// TransformStream, following the standard's algorithms closely enough that its
// ordering guarantees (backpressure, close/abort/cancel propagation, pipeTo shutdown)
// hold. Public objects hold their state in a private field; the algorithms below work
// on those plain state records, so the shim can use streams without going through
// (user-visible, freezable) public methods.
import { INTERNAL, hostOutcome, illegalConstructor, isObject } from './util.js';
import { AbortController, AbortSignal } from './abort.js';
import { ArrayPush, ArrayShift } from './primordials.js';

const PromiseCtor = Promise;
const UInt8 = Uint8Array;
const noop = () => {};
const one = () => 1;
const resolved = (v) => PromiseCtor.resolve(v);
const rejected = (e) => PromiseCtor.reject(e);
// Marks a promise as handled: the standard does so for closed/ready promises nobody may watch.
const handled = (p) => {
  p.catch(noop);
  return p;
};

function deferred() {
  let res;
  let rej;
  const d = { settled: false };
  d.promise = new PromiseCtor((a, b) => {
    res = a;
    rej = b;
  });
  d.resolve = (v) => {
    d.settled = true;
    res(v);
  };
  d.reject = (e) => {
    d.settled = true;
    rej(e);
  };
  return d;
}

/** Calls a user callback, turning a synchronous throw into a rejected promise. */
function promiseCall(fn, thisArg, ...args) {
  if (fn === undefined) return resolved();
  try {
    return resolved(fn.apply(thisArg, args));
  } catch (e) {
    return rejected(e);
  }
}

function methodOf(obj, name, what) {
  const fn = obj[name];
  if (fn !== undefined && typeof fn !== 'function') throw new TypeError(`${what}: ${name} must be a function`);
  return fn;
}

function strategyOf(strategy, defaultHWM, what) {
  if (strategy === undefined || strategy === null) return { hwm: defaultHWM, size: one };
  const hwm = strategy.highWaterMark === undefined ? defaultHWM : Number(strategy.highWaterMark);
  if (Number.isNaN(hwm) || hwm < 0) throw new RangeError(`${what}: highWaterMark must be a non-negative number`);
  const size = strategy.size;
  if (size !== undefined && typeof size !== 'function') throw new TypeError(`${what}: size must be a function`);
  return { hwm, size: size === undefined ? one : (chunk) => size(chunk) };
}

function checkSize(size) {
  if (!(size >= 0) || size === Infinity) throw new RangeError('The size of a chunk must be a finite, non-negative number');
  return size;
}

// ---------------------------------------------------------------- ReadableStream

let rsOf;
let isRS;

function newReadableState() {
  return { state: 'readable', reader: null, error: undefined, disturbed: false, c: null, pub: null };
}

function setupController(s, source, hwm, size) {
  const c = {
    s, queue: [], sizes: [], total: 0, started: false, closeRequested: false, pullAgain: false, pulling: false,
    hwm, size, pull: source.pull, cancel: source.cancel, thisArg: source.thisArg, pub: null,
  };
  c.pub = new ReadableStreamDefaultController(INTERNAL, c);
  s.c = c;
  const started = source.start === undefined ? undefined : source.start.call(source.thisArg, c.pub);
  resolved(started).then(() => {
    c.started = true;
    pullIfNeeded(c);
  }, (e) => controllerError(c, e));
}

/** A stream driven by the shim's own algorithms; returns its state record. */
function createReadable(start, pull, cancel, hwm = 1, size = one) {
  const s = rsOf(new ReadableStream(INTERNAL));
  setupController(s, { start, pull, cancel, thisArg: undefined }, hwm, size);
  return s;
}

const canCloseOrEnqueue = (c) => !c.closeRequested && c.s.state === 'readable';

function desiredSize(c) {
  const st = c.s.state;
  return st === 'errored' ? null : st === 'closed' ? 0 : c.hwm - c.total;
}

function shouldPull(c) {
  if (!c.started || !canCloseOrEnqueue(c)) return false;
  const r = c.s.reader;
  if (r !== null && r.requests.length > 0) return true;
  return desiredSize(c) > 0;
}

function pullIfNeeded(c) {
  if (!shouldPull(c)) return;
  if (c.pulling) {
    c.pullAgain = true;
    return;
  }
  c.pulling = true;
  promiseCall(c.pull, c.thisArg, c.pub).then(() => {
    c.pulling = false;
    if (c.pullAgain) {
      c.pullAgain = false;
      pullIfNeeded(c);
    }
  }, (e) => controllerError(c, e));
}

function clearAlgorithms(c) {
  c.pull = undefined;
  c.cancel = undefined;
  c.size = one;
}

function resetQueue(c) {
  c.queue = [];
  c.sizes = [];
  c.total = 0;
}

function controllerClose(c) {
  c.closeRequested = true;
  if (c.queue.length === 0) {
    clearAlgorithms(c);
    streamClose(c.s);
  }
}

function controllerEnqueue(c, chunk) {
  const r = c.s.reader;
  if (r !== null && r.requests.length > 0) {
    ArrayShift(r.requests).resolve({ value: chunk, done: false });
  } else {
    let size;
    try {
      size = checkSize(c.size(chunk));
    } catch (e) {
      controllerError(c, e);
      throw e;
    }
    ArrayPush(c.queue, chunk);
    ArrayPush(c.sizes, size);
    c.total += size;
  }
  pullIfNeeded(c);
}

function controllerError(c, e) {
  if (c.s.state !== 'readable') return;
  resetQueue(c);
  clearAlgorithms(c);
  streamError(c.s, e);
}

function streamClose(s) {
  s.state = 'closed';
  const r = s.reader;
  if (r === null) return;
  r.closed.resolve();
  for (let i = 0; i < r.requests.length; i++) r.requests[i].resolve({ value: undefined, done: true });
  r.requests = [];
}

function streamError(s, e) {
  s.state = 'errored';
  s.error = e;
  const r = s.reader;
  if (r === null) return;
  r.closed.reject(e);
  handled(r.closed.promise);
  for (let i = 0; i < r.requests.length; i++) r.requests[i].reject(e);
  r.requests = [];
}

function streamCancel(s, reason) {
  s.disturbed = true;
  if (s.state === 'closed') return resolved();
  if (s.state === 'errored') return rejected(s.error);
  streamClose(s);
  const c = s.c;
  resetQueue(c);
  const p = promiseCall(c.cancel, c.thisArg, reason);
  clearAlgorithms(c);
  return p.then(noop);
}

function acquireReader(s, pub = null) {
  const r = { s, requests: [], closed: deferred(), pub };
  s.reader = r;
  if (s.state === 'closed') r.closed.resolve();
  else if (s.state === 'errored') {
    r.closed.reject(s.error);
    handled(r.closed.promise);
  }
  return r;
}

function read(r) {
  const s = r.s;
  if (s === null) return rejected(new TypeError('This reader has been released'));
  s.disturbed = true;
  if (s.state === 'closed') return resolved({ value: undefined, done: true });
  if (s.state === 'errored') return rejected(s.error);
  const c = s.c;
  if (c.queue.length > 0) {
    const chunk = ArrayShift(c.queue);
    c.total -= ArrayShift(c.sizes);
    if (c.total < 0) c.total = 0;
    if (c.closeRequested && c.queue.length === 0) {
      clearAlgorithms(c);
      streamClose(s);
    } else pullIfNeeded(c);
    return resolved({ value: chunk, done: false });
  }
  const req = deferred();
  ArrayPush(r.requests, req);
  pullIfNeeded(c);
  return req.promise;
}

function releaseReader(r) {
  const s = r.s;
  if (s === null) return;
  const e = new TypeError('The reader was released');
  if (s.state === 'readable' && !r.closed.settled) r.closed.reject(e);
  else {
    r.closed = deferred();
    r.closed.reject(e);
  }
  handled(r.closed.promise);
  for (let i = 0; i < r.requests.length; i++) r.requests[i].reject(e);
  r.requests = [];
  s.reader = null;
  r.s = null;
}

export class ReadableStreamDefaultController {
  #c;

  constructor(key, c) {
    if (key !== INTERNAL) illegalConstructor();
    this.#c = c;
  }

  get desiredSize() { return desiredSize(this.#c); }
  /** Always null: byte sources are served through the default controller. */
  get byobRequest() { return null; }

  close() {
    const c = this.#c;
    if (!canCloseOrEnqueue(c)) throw new TypeError('The stream is already closed or closing');
    controllerClose(c);
  }

  enqueue(chunk = undefined) {
    const c = this.#c;
    if (!canCloseOrEnqueue(c)) throw new TypeError('Cannot enqueue a chunk into a stream that is closed, closing or errored');
    controllerEnqueue(c, chunk);
  }

  error(e = undefined) {
    controllerError(this.#c, e);
  }
}

export class ReadableStreamDefaultReader {
  #r;

  constructor(stream) {
    if (!isRS(stream)) throw new TypeError('ReadableStreamDefaultReader: the argument must be a ReadableStream');
    const s = rsOf(stream);
    if (s.reader !== null) throw new TypeError('This ReadableStream is currently locked to a reader');
    this.#r = acquireReader(s, this);
  }

  get closed() { return this.#r.closed.promise; }

  read() {
    return read(this.#r);
  }

  releaseLock() {
    releaseReader(this.#r);
  }

  cancel(reason = undefined) {
    const s = this.#r.s;
    if (s === null) return rejected(new TypeError('This reader has been released'));
    return streamCancel(s, reason);
  }
}

const AsyncIteratorPrototype = Object.getPrototypeOf(Object.getPrototypeOf(async function* () {}).prototype);

function iterate(s, preventCancel) {
  const r = acquireReader(s);
  let finished = false;
  const finish = () => {
    finished = true;
    releaseReader(r);
  };
  const it = Object.create(AsyncIteratorPrototype);
  it.next = () => {
    if (finished) return resolved({ value: undefined, done: true });
    return read(r).then((res) => {
      if (res.done) finish();
      return res;
    }, (e) => {
      finish();
      throw e;
    });
  };
  it.return = (value) => {
    if (finished) return resolved({ value, done: true });
    const p = preventCancel ? resolved() : streamCancel(s, value);
    finish();
    return p.then(() => ({ value, done: true }));
  };
  return it;
}

function tee(s) {
  const r = acquireReader(s);
  let reading = false;
  let readAgain = false;
  let canceled1 = false;
  let canceled2 = false;
  let reason1;
  let reason2;
  const cancelled = deferred();
  const pull = () => {
    if (reading) {
      readAgain = true;
      return resolved();
    }
    reading = true;
    read(r).then(({ value, done }) => {
      reading = false;
      if (done) {
        if (!canceled1 && canCloseOrEnqueue(b1.c)) controllerClose(b1.c);
        if (!canceled2 && canCloseOrEnqueue(b2.c)) controllerClose(b2.c);
        if (!canceled1 || !canceled2) cancelled.resolve();
        return;
      }
      if (!canceled1 && canCloseOrEnqueue(b1.c)) controllerEnqueue(b1.c, value);
      if (!canceled2 && canCloseOrEnqueue(b2.c)) controllerEnqueue(b2.c, value);
      if (readAgain) {
        readAgain = false;
        pull();
      }
    }, () => {
      reading = false;
    });
    return resolved();
  };
  const cancelBranch = (first) => (reason) => {
    if (first) {
      canceled1 = true;
      reason1 = reason;
    } else {
      canceled2 = true;
      reason2 = reason;
    }
    if (canceled1 && canceled2) cancelled.resolve(streamCancel(s, [reason1, reason2]));
    return cancelled.promise;
  };
  const b1 = createReadable(undefined, pull, cancelBranch(true));
  const b2 = createReadable(undefined, pull, cancelBranch(false));
  r.closed.promise.catch((e) => {
    controllerError(b1.c, e);
    controllerError(b2.c, e);
    if (!canceled1 || !canceled2) cancelled.resolve();
  });
  return [b1.pub, b2.pub];
}

function pipe(src, dest, preventClose, preventAbort, preventCancel, signal) {
  const r = acquireReader(src);
  const w = acquireWriter(dest);
  src.disturbed = true;
  let shuttingDown = false;
  let currentWrite = resolved();
  const done = deferred();
  let onAbort;

  const finalize = (isError, error) => {
    releaseWriter(w);
    releaseReader(r);
    if (onAbort) signal.removeEventListener('abort', onAbort);
    if (isError) done.reject(error);
    else done.resolve();
  };
  const shutdown = (action, isError, error) => {
    if (shuttingDown) return;
    shuttingDown = true;
    // Every chunk already read is written before the pipe acts on the shutdown.
    const pending = dest.state === 'writable' && !closeQueuedOrInFlight(dest) ? currentWrite.then(noop, noop) : resolved();
    pending.then(() => (action ? action() : undefined))
      .then(() => finalize(isError, error), (e) => finalize(true, e));
  };
  const sourceErrored = (e) => shutdown(preventAbort ? null : () => writableAbort(dest, e), true, e);
  const destErrored = (e) => shutdown(preventCancel ? null : () => streamCancel(src, e), true, e);
  const sourceClosed = () => shutdown(preventClose ? null : () => closeWithErrorPropagation(dest), false);

  if (signal !== undefined) {
    onAbort = () => {
      const e = signal.reason;
      shutdown(() => PromiseCtor.all([
        !preventAbort && dest.state === 'writable' ? writableAbort(dest, e) : undefined,
        !preventCancel && src.state === 'readable' ? streamCancel(src, e) : undefined,
      ]), true, e);
    };
    if (signal.aborted) {
      onAbort();
      return done.promise;
    }
    signal.addEventListener('abort', onAbort);
  }

  if (src.state === 'errored') sourceErrored(src.error);
  else if (dest.state === 'errored' || dest.state === 'erroring') destErrored(dest.storedError);
  else if (src.state === 'closed') sourceClosed();
  else if (closeQueuedOrInFlight(dest) || dest.state === 'closed') {
    const e = new TypeError('The destination WritableStream is closing or closed');
    shutdown(preventCancel ? null : () => streamCancel(src, e), true, e);
  }
  r.closed.promise.catch((e) => sourceErrored(e));
  w.closed.promise.catch((e) => destErrored(e));

  const loop = () => {
    if (shuttingDown) return;
    w.ready.promise.then(() => {
      if (shuttingDown) return undefined;
      return read(r).then(({ value, done: end }) => {
        if (end) return sourceClosed();
        if (shuttingDown) return undefined;
        currentWrite = writerWrite(w, value);
        currentWrite.catch(noop);
        return loop();
      }, noop);
    }, noop);
  };
  loop();
  return done.promise;
}

function pipeOptions(options, what) {
  if (options === undefined || options === null) return [false, false, false, undefined];
  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError(`${what}: signal must be an AbortSignal`);
  return [Boolean(options.preventClose), Boolean(options.preventAbort), Boolean(options.preventCancel), signal];
}

export class ReadableStream {
  #s = newReadableState();

  constructor(underlyingSource = undefined, strategy = undefined) {
    const s = this.#s;
    s.pub = this;
    if (underlyingSource === INTERNAL) return;
    const source = underlyingSource ?? {};
    if (!isObject(source)) throw new TypeError('ReadableStream: the underlying source must be an object');
    const type = source.type;
    if (type !== undefined && String(type) !== 'bytes') throw new TypeError(`ReadableStream: unknown type "${type}"`);
    if (type !== undefined && strategy?.size !== undefined) throw new RangeError('ReadableStream: a byte stream cannot have a size function');
    const { hwm, size } = strategyOf(strategy, type === undefined ? 1 : 0, 'ReadableStream');
    setupController(s, {
      start: methodOf(source, 'start', 'ReadableStream'),
      pull: methodOf(source, 'pull', 'ReadableStream'),
      cancel: methodOf(source, 'cancel', 'ReadableStream'),
      thisArg: source,
    }, hwm, size);
  }

  get locked() { return this.#s.reader !== null; }

  cancel(reason = undefined) {
    if (this.#s.reader !== null) return rejected(new TypeError('Cannot cancel a ReadableStream that is locked to a reader'));
    return streamCancel(this.#s, reason);
  }

  getReader(options = undefined) {
    const mode = options?.mode;
    if (mode !== undefined) {
      throw new TypeError(String(mode) === 'byob' ? 'ReadableStream: BYOB readers are not supported' : `ReadableStream: unknown reader mode "${mode}"`);
    }
    return new ReadableStreamDefaultReader(this);
  }

  tee() {
    if (this.#s.reader !== null) throw new TypeError('Cannot tee a ReadableStream that is locked to a reader');
    return tee(this.#s);
  }

  pipeTo(destination, options = undefined) {
    let args;
    try {
      if (!isWS(destination)) throw new TypeError('pipeTo: the destination must be a WritableStream');
      args = pipeOptions(options, 'pipeTo');
      if (this.#s.reader !== null) throw new TypeError('pipeTo: the source ReadableStream is locked');
      if (wsOf(destination).writer !== null) throw new TypeError('pipeTo: the destination WritableStream is locked');
    } catch (e) {
      return rejected(e);
    }
    return pipe(this.#s, wsOf(destination), ...args);
  }

  pipeThrough(transform, options = undefined) {
    const writable = transform?.writable;
    const readable = transform?.readable;
    if (!isWS(writable) || !isRS(readable)) throw new TypeError('pipeThrough: the argument must have a writable WritableStream and a readable ReadableStream');
    const args = pipeOptions(options, 'pipeThrough');
    if (this.#s.reader !== null) throw new TypeError('pipeThrough: the source ReadableStream is locked');
    if (wsOf(writable).writer !== null) throw new TypeError('pipeThrough: the destination WritableStream is locked');
    handled(pipe(this.#s, wsOf(writable), ...args));
    return readable;
  }

  values(options = undefined) {
    if (this.#s.reader !== null) throw new TypeError('Cannot iterate a ReadableStream that is locked to a reader');
    return iterate(this.#s, Boolean(options?.preventCancel));
  }

  [Symbol.asyncIterator](options = undefined) {
    return this.values(options);
  }

  static from(asyncIterable) {
    const asyncMethod = asyncIterable?.[Symbol.asyncIterator];
    const method = asyncMethod ?? asyncIterable?.[Symbol.iterator];
    if (typeof method !== 'function') throw new TypeError('ReadableStream.from: the argument must be iterable or async iterable');
    const it = method.call(asyncIterable);
    if (!isObject(it)) throw new TypeError('ReadableStream.from: the iterator must be an object');
    const s = createReadable(undefined, () => resolved(it.next()).then((res) => {
      if (!isObject(res)) throw new TypeError('ReadableStream.from: the iterator result must be an object');
      if (res.done) {
        if (canCloseOrEnqueue(s.c)) controllerClose(s.c);
        return undefined;
      }
      return resolved(res.value).then((value) => {
        if (canCloseOrEnqueue(s.c)) controllerEnqueue(s.c, value);
      });
    }), (reason) => {
      const ret = it.return;
      if (typeof ret !== 'function') return resolved();
      return resolved(ret.call(it, reason)).then((res) => {
        if (!isObject(res)) throw new TypeError('ReadableStream.from: the iterator result must be an object');
      });
    }, 0);
    return s.pub;
  }

  static {
    rsOf = (x) => x.#s;
    isRS = (x) => isObject(x) && #s in x;
  }
}

// ---------------------------------------------------------------- WritableStream

let wsOf;
let isWS;
const CLOSE_SENTINEL = {};

function newWritableState() {
  return {
    state: 'writable', storedError: undefined, writer: null, c: null, inFlightWrite: null, inFlightClose: null,
    closeRequest: null, pendingAbort: null, writeRequests: [], backpressure: false, pub: null,
  };
}

const closeQueuedOrInFlight = (ws) => ws.closeRequest !== null || ws.inFlightClose !== null;
const hasOperationInFlight = (ws) => ws.inFlightWrite !== null || ws.inFlightClose !== null;
const writableDesiredSize = (c) => c.hwm - c.total;

function setupWritableController(ws, sink, hwm, size) {
  const c = {
    ws, queue: [], sizes: [], total: 0, started: false, hwm, size, write: sink.write, close: sink.close, abort: sink.abort,
    thisArg: sink.thisArg, aborted: false, abortReason: undefined, abortController: null, pub: null,
  };
  c.pub = new WritableStreamDefaultController(INTERNAL, c);
  ws.c = c;
  updateBackpressure(ws, writableDesiredSize(c) <= 0);
  const started = sink.start === undefined ? undefined : sink.start.call(sink.thisArg, c.pub);
  resolved(started).then(() => {
    c.started = true;
    advanceQueue(c);
  }, (e) => {
    c.started = true;
    dealWithRejection(ws, e);
  });
}

function createWritable(start, write, close, abort, hwm = 1, size = one) {
  const ws = wsOf(new WritableStream(INTERNAL));
  setupWritableController(ws, { start, write, close, abort, thisArg: undefined }, hwm, size);
  return ws;
}

function writableAbort(ws, reason) {
  if (ws.state === 'closed' || ws.state === 'errored') return resolved();
  const c = ws.c;
  c.aborted = true;
  c.abortReason = reason;
  if (c.abortController !== null) c.abortController.abort(reason);
  if (ws.state === 'closed' || ws.state === 'errored') return resolved();
  if (ws.pendingAbort !== null) return ws.pendingAbort.promise;
  const wasAlreadyErroring = ws.state === 'erroring';
  const d = deferred();
  d.reason = wasAlreadyErroring ? undefined : reason;
  d.wasAlreadyErroring = wasAlreadyErroring;
  ws.pendingAbort = d;
  if (!wasAlreadyErroring) startErroring(ws, reason);
  return d.promise;
}

function writableClose(ws) {
  if (ws.state === 'closed' || ws.state === 'errored') return rejected(new TypeError('The WritableStream is closed or errored'));
  const d = deferred();
  ws.closeRequest = d;
  const w = ws.writer;
  if (w !== null && ws.backpressure && ws.state === 'writable') w.ready.resolve();
  const c = ws.c;
  ArrayPush(c.queue, CLOSE_SENTINEL);
  ArrayPush(c.sizes, 0);
  advanceQueue(c);
  return d.promise;
}

function closeWithErrorPropagation(ws) {
  if (closeQueuedOrInFlight(ws) || ws.state === 'closed') return resolved();
  if (ws.state === 'errored') return rejected(ws.storedError);
  return writableClose(ws);
}

function dealWithRejection(ws, e) {
  if (ws.state === 'writable') startErroring(ws, e);
  else finishErroring(ws);
}

function startErroring(ws, reason) {
  ws.state = 'erroring';
  ws.storedError = reason;
  if (ws.writer !== null) readyRejected(ws.writer, reason);
  if (!hasOperationInFlight(ws) && ws.c.started) finishErroring(ws);
}

function finishErroring(ws) {
  ws.state = 'errored';
  const c = ws.c;
  c.queue = [];
  c.sizes = [];
  c.total = 0;
  const e = ws.storedError;
  for (let i = 0; i < ws.writeRequests.length; i++) ws.writeRequests[i].reject(e);
  ws.writeRequests = [];
  const abort = ws.pendingAbort;
  if (abort === null) {
    rejectCloseAndClosed(ws);
    return;
  }
  ws.pendingAbort = null;
  if (abort.wasAlreadyErroring) {
    abort.reject(e);
    rejectCloseAndClosed(ws);
    return;
  }
  const p = promiseCall(c.abort, c.thisArg, abort.reason);
  clearWritableAlgorithms(c);
  p.then(() => {
    abort.resolve();
    rejectCloseAndClosed(ws);
  }, (r) => {
    abort.reject(r);
    rejectCloseAndClosed(ws);
  });
}

function rejectCloseAndClosed(ws) {
  if (ws.closeRequest !== null) {
    ws.closeRequest.reject(ws.storedError);
    ws.closeRequest = null;
  }
  const w = ws.writer;
  if (w !== null) {
    w.closed.reject(ws.storedError);
    handled(w.closed.promise);
  }
}

function updateBackpressure(ws, backpressure) {
  const w = ws.writer;
  if (w !== null && backpressure !== ws.backpressure) {
    if (backpressure) w.ready = deferred();
    else w.ready.resolve();
  }
  ws.backpressure = backpressure;
}

function clearWritableAlgorithms(c) {
  c.write = undefined;
  c.close = undefined;
  c.abort = undefined;
  c.size = one;
}

function writableControllerError(c, e) {
  clearWritableAlgorithms(c);
  startErroring(c.ws, e);
}

function errorIfNeeded(c, e) {
  if (c.ws.state === 'writable') writableControllerError(c, e);
}

function advanceQueue(c) {
  const ws = c.ws;
  if (!c.started || ws.inFlightWrite !== null) return;
  if (ws.state === 'erroring') {
    finishErroring(ws);
    return;
  }
  if (c.queue.length === 0) return;
  if (c.queue[0] === CLOSE_SENTINEL) {
    ws.inFlightClose = ws.closeRequest;
    ws.closeRequest = null;
    ArrayShift(c.queue);
    ArrayShift(c.sizes);
    const p = promiseCall(c.close, c.thisArg);
    clearWritableAlgorithms(c);
    p.then(() => {
      ws.inFlightClose.resolve();
      ws.inFlightClose = null;
      if (ws.state === 'erroring') {
        ws.storedError = undefined;
        if (ws.pendingAbort !== null) {
          ws.pendingAbort.resolve();
          ws.pendingAbort = null;
        }
      }
      ws.state = 'closed';
      if (ws.writer !== null) ws.writer.closed.resolve();
    }, (e) => {
      ws.inFlightClose.reject(e);
      ws.inFlightClose = null;
      if (ws.pendingAbort !== null) {
        ws.pendingAbort.reject(e);
        ws.pendingAbort = null;
      }
      dealWithRejection(ws, e);
    });
    return;
  }
  ws.inFlightWrite = ArrayShift(ws.writeRequests);
  promiseCall(c.write, c.thisArg, c.queue[0], c.pub).then(() => {
    ws.inFlightWrite.resolve();
    ws.inFlightWrite = null;
    ArrayShift(c.queue);
    c.total -= ArrayShift(c.sizes);
    if (c.total < 0) c.total = 0;
    if (!closeQueuedOrInFlight(ws) && ws.state === 'writable') updateBackpressure(ws, writableDesiredSize(c) <= 0);
    advanceQueue(c);
  }, (e) => {
    if (ws.state === 'writable') clearWritableAlgorithms(c);
    ws.inFlightWrite.reject(e);
    ws.inFlightWrite = null;
    dealWithRejection(ws, e);
  });
}

function acquireWriter(ws, pub = null) {
  const w = { ws, ready: deferred(), closed: deferred(), pub };
  ws.writer = w;
  const st = ws.state;
  if (st === 'writable') {
    if (closeQueuedOrInFlight(ws) || !ws.backpressure) w.ready.resolve();
  } else if (st === 'erroring') {
    w.ready.reject(ws.storedError);
    handled(w.ready.promise);
  } else if (st === 'closed') {
    w.ready.resolve();
    w.closed.resolve();
  } else {
    w.ready.reject(ws.storedError);
    w.closed.reject(ws.storedError);
    handled(w.ready.promise);
    handled(w.closed.promise);
  }
  return w;
}

function readyRejected(w, e) {
  if (w.ready.settled) w.ready = deferred();
  w.ready.reject(e);
  handled(w.ready.promise);
}

function releaseWriter(w) {
  const ws = w.ws;
  if (ws === null) return;
  const e = new TypeError('The writer was released');
  readyRejected(w, e);
  if (w.closed.settled) w.closed = deferred();
  w.closed.reject(e);
  handled(w.closed.promise);
  ws.writer = null;
  w.ws = null;
}

function writerWrite(w, chunk) {
  const ws = w.ws;
  if (ws === null) return rejected(new TypeError('The writer was released'));
  const c = ws.c;
  let size;
  try {
    size = checkSize(c.size(chunk));
  } catch (e) {
    errorIfNeeded(c, e);
    size = 1;
  }
  if (ws.state === 'errored' || ws.state === 'erroring') return rejected(ws.storedError);
  if (closeQueuedOrInFlight(ws) || ws.state === 'closed') return rejected(new TypeError('Cannot write to a WritableStream that is closing or closed'));
  const d = deferred();
  ArrayPush(ws.writeRequests, d);
  ArrayPush(c.queue, chunk);
  ArrayPush(c.sizes, size);
  c.total += size;
  if (!closeQueuedOrInFlight(ws) && ws.state === 'writable') updateBackpressure(ws, writableDesiredSize(c) <= 0);
  advanceQueue(c);
  return d.promise;
}

export class WritableStreamDefaultController {
  #c;

  constructor(key, c) {
    if (key !== INTERNAL) illegalConstructor();
    this.#c = c;
  }

  get signal() {
    const c = this.#c;
    if (c.abortController === null) {
      c.abortController = new AbortController();
      if (c.aborted) c.abortController.abort(c.abortReason);
    }
    return c.abortController.signal;
  }

  error(e = undefined) {
    const c = this.#c;
    if (c.ws.state === 'writable') writableControllerError(c, e);
  }
}

export class WritableStreamDefaultWriter {
  #w;

  constructor(stream) {
    if (!isWS(stream)) throw new TypeError('WritableStreamDefaultWriter: the argument must be a WritableStream');
    const ws = wsOf(stream);
    if (ws.writer !== null) throw new TypeError('This WritableStream is currently locked to a writer');
    this.#w = acquireWriter(ws, this);
  }

  get closed() { return this.#w.closed.promise; }
  get ready() { return this.#w.ready.promise; }

  get desiredSize() {
    const ws = this.#w.ws;
    if (ws === null) throw new TypeError('The writer was released');
    if (ws.state === 'errored' || ws.state === 'erroring') return null;
    if (ws.state === 'closed') return 0;
    return writableDesiredSize(ws.c);
  }

  abort(reason = undefined) {
    const ws = this.#w.ws;
    if (ws === null) return rejected(new TypeError('The writer was released'));
    return writableAbort(ws, reason);
  }

  close() {
    const ws = this.#w.ws;
    if (ws === null) return rejected(new TypeError('The writer was released'));
    if (closeQueuedOrInFlight(ws)) return rejected(new TypeError('The WritableStream is already closing'));
    return writableClose(ws);
  }

  releaseLock() {
    releaseWriter(this.#w);
  }

  write(chunk = undefined) {
    return writerWrite(this.#w, chunk);
  }
}

export class WritableStream {
  #ws = newWritableState();

  constructor(underlyingSink = undefined, strategy = undefined) {
    const ws = this.#ws;
    ws.pub = this;
    if (underlyingSink === INTERNAL) return;
    const sink = underlyingSink ?? {};
    if (!isObject(sink)) throw new TypeError('WritableStream: the underlying sink must be an object');
    if (sink.type !== undefined) throw new RangeError('WritableStream: type must be undefined');
    const { hwm, size } = strategyOf(strategy, 1, 'WritableStream');
    setupWritableController(ws, {
      start: methodOf(sink, 'start', 'WritableStream'),
      write: methodOf(sink, 'write', 'WritableStream'),
      close: methodOf(sink, 'close', 'WritableStream'),
      abort: methodOf(sink, 'abort', 'WritableStream'),
      thisArg: sink,
    }, hwm, size);
  }

  get locked() { return this.#ws.writer !== null; }

  abort(reason = undefined) {
    if (this.#ws.writer !== null) return rejected(new TypeError('Cannot abort a WritableStream that is locked to a writer'));
    return writableAbort(this.#ws, reason);
  }

  close() {
    const ws = this.#ws;
    if (ws.writer !== null) return rejected(new TypeError('Cannot close a WritableStream that is locked to a writer'));
    if (closeQueuedOrInFlight(ws)) return rejected(new TypeError('The WritableStream is already closing'));
    return writableClose(ws);
  }

  getWriter() {
    return new WritableStreamDefaultWriter(this);
  }

  static {
    wsOf = (x) => x.#ws;
    isWS = (x) => isObject(x) && #ws in x;
  }
}

// ---------------------------------------------------------------- TransformStream

const identityTransform = (chunk, controller) => controller.enqueue(chunk);

function setBackpressure(t, backpressure) {
  if (t.backpressureChange !== null) t.backpressureChange.resolve();
  t.backpressureChange = deferred();
  t.backpressure = backpressure;
}

function clearTransformAlgorithms(t) {
  t.transform = noop;
  t.flush = undefined;
  t.cancel = undefined;
}

function errorWritableAndUnblockWrite(t, e) {
  clearTransformAlgorithms(t);
  errorIfNeeded(t.writable.c, e);
  if (t.backpressure) setBackpressure(t, false);
}

function transformError(t, e) {
  controllerError(t.readable.c, e);
  errorWritableAndUnblockWrite(t, e);
}

function transformEnqueue(t, chunk) {
  const c = t.readable.c;
  if (!canCloseOrEnqueue(c)) throw new TypeError('The readable side of the TransformStream is closed or errored');
  try {
    controllerEnqueue(c, chunk);
  } catch (e) {
    errorWritableAndUnblockWrite(t, e);
    throw t.readable.error;
  }
  if (!shouldPull(c) && !t.backpressure) setBackpressure(t, true);
}

function performTransform(t, chunk) {
  return promiseCall(t.transform, t.thisArg, chunk, t.pub).then(undefined, (e) => {
    transformError(t, e);
    throw e;
  });
}

function sinkWrite(t, chunk) {
  if (!t.backpressure) return performTransform(t, chunk);
  return t.backpressureChange.promise.then(() => {
    if (t.writable.state === 'erroring') throw t.writable.storedError;
    return performTransform(t, chunk);
  });
}

function sinkClose(t) {
  const rs = t.readable;
  const p = promiseCall(t.flush, t.thisArg, t.pub);
  clearTransformAlgorithms(t);
  return p.then(() => {
    if (rs.state === 'errored') throw rs.error;
    if (canCloseOrEnqueue(rs.c)) controllerClose(rs.c);
  }, (e) => {
    transformError(t, e);
    throw rs.error;
  });
}

function sinkAbort(t, reason) {
  const p = promiseCall(t.cancel, t.thisArg, reason);
  clearTransformAlgorithms(t);
  return p.then(() => {
    if (t.readable.state === 'errored') throw t.readable.error;
    controllerError(t.readable.c, reason);
  }, (e) => {
    controllerError(t.readable.c, e);
    throw e;
  });
}

function sourceCancel(t, reason) {
  const p = promiseCall(t.cancel, t.thisArg, reason);
  clearTransformAlgorithms(t);
  return p.then(() => {
    errorWritableAndUnblockWrite(t, reason);
  }, (e) => {
    errorWritableAndUnblockWrite(t, e);
    throw e;
  });
}

function sourcePull(t) {
  setBackpressure(t, false);
  return t.backpressureChange.promise;
}

export class TransformStreamDefaultController {
  #t;

  constructor(key, t) {
    if (key !== INTERNAL) illegalConstructor();
    this.#t = t;
  }

  get desiredSize() { return desiredSize(this.#t.readable.c); }

  enqueue(chunk = undefined) {
    transformEnqueue(this.#t, chunk);
  }

  error(reason = undefined) {
    transformError(this.#t, reason);
  }

  terminate() {
    const t = this.#t;
    const c = t.readable.c;
    if (canCloseOrEnqueue(c)) controllerClose(c);
    errorWritableAndUnblockWrite(t, new TypeError('The TransformStream was terminated'));
  }
}

export class TransformStream {
  #t;

  constructor(transformer = undefined, writableStrategy = undefined, readableStrategy = undefined) {
    const tr = transformer ?? {};
    if (!isObject(tr)) throw new TypeError('TransformStream: the transformer must be an object');
    if (tr.readableType !== undefined) throw new RangeError('TransformStream: readableType must be undefined');
    if (tr.writableType !== undefined) throw new RangeError('TransformStream: writableType must be undefined');
    const readableS = strategyOf(readableStrategy, 0, 'TransformStream');
    const writableS = strategyOf(writableStrategy, 1, 'TransformStream');
    const start = methodOf(tr, 'start', 'TransformStream');
    const t = {
      readable: null, writable: null, backpressure: false, backpressureChange: null, thisArg: tr, pub: null,
      transform: methodOf(tr, 'transform', 'TransformStream') ?? identityTransform,
      flush: methodOf(tr, 'flush', 'TransformStream'),
      cancel: methodOf(tr, 'cancel', 'TransformStream'),
    };
    this.#t = t;
    t.pub = new TransformStreamDefaultController(INTERNAL, t);
    const startPromise = deferred();
    t.writable = createWritable(() => startPromise.promise, (chunk) => sinkWrite(t, chunk), () => sinkClose(t), (r) => sinkAbort(t, r), writableS.hwm, writableS.size);
    t.readable = createReadable(() => startPromise.promise, () => sourcePull(t), (r) => sourceCancel(t, r), readableS.hwm, readableS.size);
    setBackpressure(t, true);
    startPromise.resolve(start === undefined ? undefined : start.call(tr, t.pub));
  }

  get readable() { return this.#t.readable.pub; }
  get writable() { return this.#t.writable.pub; }
}

/** Workers' byte pass-through stream. */
export class IdentityTransformStream extends TransformStream {
  constructor() {
    super();
  }
}

/** Workers' pass-through stream that must carry exactly `length` bytes. */
export class FixedLengthStream extends TransformStream {
  constructor(length) {
    const expected = Number(length);
    if (!Number.isSafeInteger(expected) || expected < 0) throw new TypeError('FixedLengthStream: the length must be a non-negative integer');
    let seen = 0;
    super({
      transform(chunk, controller) {
        if (!ArrayBuffer.isView(chunk)) throw new TypeError('FixedLengthStream: chunks must be ArrayBufferViews');
        seen += chunk.byteLength;
        if (seen > expected) throw new TypeError(`FixedLengthStream: more than the expected ${expected} bytes were written`);
        controller.enqueue(chunk);
      },
      flush() {
        if (seen !== expected) throw new TypeError(`FixedLengthStream: ${seen} bytes were written, but ${expected} were expected`);
      },
    });
  }
}

// ---------------------------------------------------------------- queuing strategies

const byteLengthSize = function size(chunk) {
  return chunk.byteLength;
};
const countSize = function size() {
  return 1;
};

function strategyHWM(init, what) {
  if (!isObject(init) || init.highWaterMark === undefined) throw new TypeError(`${what}: highWaterMark is required`);
  return Number(init.highWaterMark);
}

export class ByteLengthQueuingStrategy {
  #hwm;

  constructor(init) {
    this.#hwm = strategyHWM(init, 'ByteLengthQueuingStrategy');
  }

  get highWaterMark() { return this.#hwm; }
  get size() { return byteLengthSize; }
}

export class CountQueuingStrategy {
  #hwm;

  constructor(init) {
    this.#hwm = strategyHWM(init, 'CountQueuingStrategy');
  }

  get highWaterMark() { return this.#hwm; }
  get size() { return countSize; }
}

// ---------------------------------------------------------------- for the Body mixin

export const isReadableStream = (x) => isRS(x);
export const isLocked = (stream) => rsOf(stream).reader !== null;
export const isDisturbed = (stream) => rsOf(stream).disturbed;
export const teeStream = (stream) => tee(rsOf(stream));

/** A stream yielding a copy of bytes once it is read (the copy keeps clones independent). */
export function streamOfBytes(bytes) {
  const s = createReadable(undefined, () => {
    controllerEnqueue(s.c, bytes.slice());
    controllerClose(s.c);
  }, undefined, 0);
  return s.pub;
}

/** A stream already read to its end: what `body` shows after text()/json()/... */
export function spentStream() {
  const s = createReadable(undefined, undefined, undefined, 0);
  controllerClose(s.c);
  s.disturbed = true;
  acquireReader(s);
  return s.pub;
}

/** A chunk a body stream produced, as bytes; null when it is not a BufferSource. */
function chunkBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  return null;
}

/**
 * For the runtime: reads a body stream one chunk at a time (a subrequest's streamed
 * body), leaving it locked and disturbed. next() resolves with a Uint8Array (not copied)
 * or null at the end; cancel(reason) cancels the stream.
 */
export function chunkReader(stream, what) {
  const s = rsOf(stream);
  const r = acquireReader(s);
  return {
    async next() {
      const { value, done } = await read(r);
      if (done) return null;
      const bytes = chunkBytes(value);
      if (bytes === null) {
        const e = new TypeError(`${what}: the body stream produced a chunk that is not a Uint8Array`);
        handled(streamCancel(s, e));
        throw e;
      }
      return bytes;
    },
    cancel(reason) {
      handled(streamCancel(s, reason));
    },
  };
}

/**
 * For the runtime: a stream it feeds itself (a request body the host pushes), through the
 * controller's own state, not its public methods, which a worker may have replaced.
 * onPull runs when the stream wants more. enqueue and close do nothing once the stream is
 * closed or errored (the reader cancelled it).
 */
export function fedStream(onPull) {
  const stream = new ReadableStream({ pull: onPull });
  const c = rsOf(stream).c;
  return {
    stream,
    enqueue(chunk) { if (canCloseOrEnqueue(c)) controllerEnqueue(c, chunk); },
    close() { if (canCloseOrEnqueue(c)) controllerClose(c); },
    error(e) { controllerError(c, e); },
  };
}

/**
 * For the runtime: the response body's reader, through the stream's own state. read()
 * resolves with {value, done}, as a default reader's does; cancel(reason) cancels it.
 */
export function bodyReader(stream) {
  const s = rsOf(stream);
  if (s.reader !== null) throw new TypeError('This ReadableStream is currently locked to a reader');
  const r = acquireReader(s);
  return {
    read: () => read(r),
    cancel: (reason) => streamCancel(s, reason),
  };
}

/**
 * Reads a body stream to its end, leaving it locked and disturbed as "fully reading" a
 * body does. Resolves with the chunks (Uint8Arrays, not copied) and their total size.
 */
export async function readAllChunks(stream, what) {
  const s = rsOf(stream);
  const r = acquireReader(s);
  const chunks = [];
  let total = 0;
  for (;;) {
    const { value, done } = await read(r);
    if (done) return { chunks, total };
    let bytes;
    if (value instanceof Uint8Array) bytes = value;
    else if (ArrayBuffer.isView(value)) bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    else if (value instanceof ArrayBuffer) bytes = new Uint8Array(value);
    else {
      const e = new TypeError(`${what}: the body stream produced a chunk that is not a Uint8Array`);
      streamCancel(s, e);
      throw e;
    }
    ArrayPush(chunks, bytes);
    total += bytes.byteLength;
  }
}

/**
 * A body the host holds (a subrequest's response, a streamed AI answer), pulled one chunk
 * at a time as the worker reads, so the host keeps one window, not the whole body.
 * read() gives the host's pending chunk (an ArrayBuffer, or null at the end); failure(err)
 * is what the reader sees when the host fails; cancel() lets the host drop it.
 */
export function hostPulledStream(read, failure, cancel) {
  let open = true;
  return new ReadableStream({
    async pull(controller) {
      let chunk;
      try {
        chunk = await hostOutcome(read());
      } catch (err) {
        if (!open) return;
        open = false;
        controller.error(failure(err));
        return;
      }
      if (!open) return;
      if (chunk === null) {
        open = false;
        controller.close();
      } else {
        controller.enqueue(new UInt8(chunk));
      }
    },
    cancel() {
      if (!open) return;
      open = false;
      cancel();
    },
  }, { highWaterMark: 0 });
}
