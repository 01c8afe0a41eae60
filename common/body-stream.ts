import { EdgeError } from './errors.js';

// A body on its way between a worker and an actor (stub.fetch()), in either direction,
// whatever carries it (the caller's isolate, the actor's isolate, the peer channel). It is
// pulled: read() asks for the next chunk, so nothing is produced ahead of the reader by
// more than the carrier's window, and cancel() tells the producer to stop.

export interface BodyStream {
  /** The next chunk, or null at its end; rejects when the body failed or was cancelled. */
  read(): Promise<Uint8Array | null>;
  /** The reader is done with it: the producer is told (once), and pending and later reads reject. */
  cancel(reason: string): void;
}

/** A body was cancelled, or its producer failed: reads reject with this. */
export class BodyStreamError extends EdgeError {}

/** What a ChunkPipe holds before write() waits for the reader. */
export const PIPE_WINDOW_BYTES = 256 * 1024;

/**
 * A BodyStream fed by write()/end()/error(): a bounded window. write() settles once the
 * window has room again (the backpressure the writer waits on) and rejects once the reader
 * cancelled; onCancel tells whoever feeds it.
 */
export class ChunkPipe implements BodyStream {
  private readonly chunks: Uint8Array[] = [];
  private bytes = 0;
  private ended = false;
  private failure: Error | undefined;
  private reader: { resolve: (c: Uint8Array | null) => void; reject: (e: Error) => void } | undefined;
  private room: { resolve: () => void; reject: (e: Error) => void }[] = [];

  constructor(private readonly windowBytes = PIPE_WINDOW_BYTES, private readonly onCancel?: (reason: string) => void) {}

  /** Bytes held now. */
  get buffered(): number { return this.bytes; }
  get closed(): boolean { return this.ended || this.failure !== undefined; }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.ended) throw new BodyStreamError('the body already ended');
    if (chunk.byteLength === 0) return;
    if (this.reader) {
      const r = this.reader;
      this.reader = undefined;
      r.resolve(chunk);
      return;
    }
    this.chunks.push(chunk);
    this.bytes += chunk.byteLength;
    if (this.bytes < this.windowBytes) return;
    await new Promise<void>((resolve, reject) => this.room.push({ resolve, reject }));
  }

  end(): void {
    if (this.closed) return;
    this.ended = true;
    if (this.reader && this.chunks.length === 0) {
      const r = this.reader;
      this.reader = undefined;
      r.resolve(null);
    }
  }

  /** The producer failed: once the reader has what came before, its next read rejects with `err`. */
  error(err: Error | string): void {
    if (this.closed) return;
    this.fail(typeof err === 'string' ? new BodyStreamError(err) : err, false);
  }

  read(): Promise<Uint8Array | null> {
    const c = this.chunks.shift();
    if (c) {
      this.bytes -= c.byteLength;
      if (this.bytes < this.windowBytes) for (const w of this.room.splice(0)) w.resolve();
      return Promise.resolve(c);
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve(null);
    if (this.reader) return Promise.reject(new BodyStreamError('a body is read one chunk at a time'));
    return new Promise((resolve, reject) => { this.reader = { resolve, reject }; });
  }

  cancel(reason: string): void {
    if (this.failure) return;
    const wasOpen = !this.ended;
    this.fail(new BodyStreamError(reason), true);
    if (wasOpen) this.onCancel?.(reason);
  }

  private fail(err: Error, drop: boolean): void {
    this.failure = err;
    if (drop) {
      this.chunks.length = 0;
      this.bytes = 0;
    }
    const r = this.reader;
    this.reader = undefined;
    r?.reject(err);
    for (const w of this.room.splice(0)) w.reject(err);
  }
}

/**
 * A BodyStream over a pull function: one read at a time, `done` settles once the body
 * ended, failed or was cancelled (after onEnd ran), whatever the reader does next.
 */
export class PulledBody implements BodyStream {
  private over = false;
  private reading: Promise<unknown> = Promise.resolve();
  private settle!: () => void;
  /** Settles once the body is over (ended, failed or cancelled). */
  readonly done = new Promise<void>((resolve) => { this.settle = resolve; });
  /** Chunks handed out so far (a tracked request body that was read cannot be sent again). */
  reads = 0;

  constructor(
    private readonly pull: () => Promise<Uint8Array | null>,
    private readonly onCancel: (reason: string) => void,
  ) {}

  read(): Promise<Uint8Array | null> {
    const next = this.reading.then(async () => {
      if (this.over) throw new BodyStreamError('the body is over (cancelled or failed)');
      this.reads += 1;
      let c: Uint8Array | null;
      try {
        c = await this.pull();
      } catch (err) {
        this.finish();
        throw err;
      }
      if (c === null) this.finish();
      return c;
    });
    this.reading = next.catch(() => undefined);
    return next;
  }

  cancel(reason: string): void {
    if (this.over) return;
    this.finish();
    this.onCancel(reason);
  }

  private finish(): void {
    if (this.over) return;
    this.over = true;
    this.settle();
  }
}
