import type { IncomingMessage } from 'node:http';
import { EdgeError } from '../../common/errors.js';

// A request body on its way from the client, held to the slow-client bounds. A client
// that trickles its body must not hold a worker's isolate, so the front reads the head of
// every body (up to HEAD_BYTES, or all of it) before it takes an isolate: a body that
// ends there is passed whole, and only a client that has sent HEAD_BYTES promptly gets
// an isolate to stream the rest into. Either way a body that sends nothing for
// bodyIdleTimeoutMs, or falls below bodyMinBytesPerSecond on average once bodyGraceMs
// passed (the allowance grows by a second per bodyMinBytesPerSecond bytes received, as
// Apache's mod_reqtimeout MinRate), is answered 408 and, if it was streaming, its isolate
// freed. HttpFront checks every body in flight on one timer (sweep()).

export interface SlowClientLimits {
  /** All of a request's headers must arrive within this (Node's headersTimeout). */
  headersTimeoutMs: number;
  /** A request body that sends no byte for this long is answered 408. */
  bodyIdleTimeoutMs: number;
  /** Past bodyGraceMs, a body must keep at least this average rate. */
  bodyMinBytesPerSecond: number;
  bodyGraceMs: number;
}

export const DEFAULT_SLOW_CLIENT_LIMITS: SlowClientLimits = {
  headersTimeoutMs: 5_000,
  bodyIdleTimeoutMs: 10_000,
  bodyMinBytesPerSecond: 4 * 1024,
  bodyGraceMs: 10_000,
};

/** Bytes of a body read before an isolate is taken for it. */
export const HEAD_BYTES = 64 * 1024;

/** A request the front refuses itself, with the status that says why. */
export class HttpError extends EdgeError {
  constructor(readonly status: number, message: string) { super(message); }
}

type Sink = (chunk: Buffer | null) => void;

export class RequestBody {
  private chunks: Buffer[] = [];
  private size = 0;
  private ended = false;
  /** Why the body failed (timeout, size, client gone); set once. */
  failure: HttpError | undefined;
  private readonly started = performance.now();
  private lastByte = this.started;
  /** While the head waits for an isolate the client is not read (so it is not timed either). */
  private pausedAt: number | undefined;
  private pausedMs = 0;
  private sink: Sink | undefined;
  private onFail: ((err: HttpError) => void) | undefined;
  private headWaiter: { resolve: () => void; reject: (err: HttpError) => void } | undefined;

  constructor(
    private readonly req: IncomingMessage,
    private readonly limits: SlowClientLimits,
    private readonly maxBytes: number,
    /** Told once the body is over (ended or failed): the front stops checking it. */
    private readonly done: (body: RequestBody) => void,
  ) {
    req.on('data', this.onData);
    req.once('end', this.onEnd);
    req.on('error', this.onClose);
    req.once('close', this.onClose);
  }

  private readonly onData = (chunk: Buffer) => {
    if (this.failure) return;
    this.lastByte = performance.now();
    this.size += chunk.length;
    if (this.size > this.maxBytes) {
      this.fail(new HttpError(413, `request body is over the ${this.maxBytes}-byte limit`));
      return;
    }
    if (this.sink) { this.sink(chunk); return; }
    this.chunks.push(chunk);
    if (this.size >= HEAD_BYTES && this.pausedAt === undefined) {
      // The rest waits in the client's socket, not here, until an isolate takes it.
      this.req.pause();
      this.pausedAt = performance.now();
      this.releaseHead();
    }
  };

  private readonly onEnd = () => {
    if (this.failure) return;
    this.ended = true;
    this.finish();
    if (this.sink) this.sink(null);
    else this.releaseHead();
  };

  private readonly onClose = () => {
    if (!this.ended) this.fail(new HttpError(400, 'the client closed the connection before the request body ended'));
  };

  private releaseHead(): void {
    const w = this.headWaiter;
    this.headWaiter = undefined;
    w?.resolve();
  }

  private finish(): void {
    this.req.off('data', this.onData);
    this.done(this);
  }

  private fail(err: HttpError): void {
    if (this.failure || this.ended) return;
    this.failure = err;
    this.finish();
    // What the client sends next is read and dropped; the 408/413 closes the connection.
    this.req.resume();
    this.chunks = [];
    if (this.headWaiter) { const w = this.headWaiter; this.headWaiter = undefined; w.reject(err); }
    this.onFail?.(err);
  }

  /**
   * Resolves once the body ended (whole: true, `bytes` is all of it) or HEAD_BYTES of it
   * arrived (whole: false, `bytes` is its head); rejects with the HttpError that ended it.
   */
  async head(): Promise<{ whole: boolean; bytes: Buffer }> {
    if (this.failure) throw this.failure;
    if (!this.ended && this.size < HEAD_BYTES) {
      await new Promise<void>((resolve, reject) => { this.headWaiter = { resolve, reject }; });
    }
    const bytes = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
    this.chunks = [];
    return { whole: this.ended, bytes };
  }

  /** Hands the rest of the body to `sink` as it arrives (null at its end); `onFail` if it fails. */
  forward(sink: Sink, onFail: (err: HttpError) => void): void {
    this.onFail = onFail;
    if (this.failure) { onFail(this.failure); return; }
    for (const c of this.chunks) sink(c);
    this.chunks = [];
    if (this.ended) { sink(null); return; }
    this.sink = sink;
    this.release();
  }

  /**
   * Stops reading the client while the isolate has not asked for more of the body (the
   * rest waits in the client's socket, not in the isolate); like the wait for an isolate,
   * that time is not held against the client's rate.
   */
  hold(): void {
    if (this.pausedAt !== undefined || !this.sink || this.ended || this.failure) return;
    this.req.pause();
    this.pausedAt = performance.now();
  }

  /** Reads the client again after hold() (or the head's wait for an isolate). */
  release(): void {
    if (this.pausedAt === undefined || !this.sink || this.failure) return;
    const now = performance.now();
    this.pausedMs += now - this.pausedAt;
    this.lastByte = now;
    this.pausedAt = undefined;
    this.req.resume();
  }

  /**
   * The agent itself did not run for `ms` (its event loop was blocked, or the process was
   * paused): that time is nobody's silence, least of all the client's, whose bytes may be
   * waiting unread in the socket.
   */
  stalled(ms: number): void {
    this.lastByte += ms;
    this.pausedMs += ms;
  }

  /** Fails the body if it broke a slow-client bound by `now`. */
  check(now: number): void {
    if (this.pausedAt !== undefined) return;
    const { bodyIdleTimeoutMs, bodyGraceMs, bodyMinBytesPerSecond } = this.limits;
    if (now - this.lastByte > bodyIdleTimeoutMs) {
      this.fail(new HttpError(408, `the request body sent nothing for ${bodyIdleTimeoutMs / 1000} s`));
      return;
    }
    const allowed = bodyGraceMs + (this.size / bodyMinBytesPerSecond) * 1000;
    if (now - this.started - this.pausedMs > allowed) {
      this.fail(new HttpError(408, `the request body is arriving slower than ${bodyMinBytesPerSecond} bytes per second`));
    }
  }
}
