import { ChunkPipe, type BodyStream } from '../../common/body-stream.js';
import { EdgeError } from '../../common/errors.js';

// The streamed bodies of one isolate's stub.fetch() calls, by the shim's call id: the
// request body the worker writes (actorWrite, into a bounded ChunkPipe the actor's side
// reads on demand) and the actor's response body it reads (actorRead). Nothing a request
// started outlives it: when the request ends (or the isolate goes), every body still open
// is cancelled, which reaches the actor (its stream's cancel(), its request then settles
// and its input gate opens).

export class ActorStreamError extends EdgeError {}

/** What an upload holds on the host before actorWrite waits for the actor to read. */
export const UPLOAD_WINDOW_BYTES = 256 * 1024;

interface Open {
  upload?: ChunkPipe;
  download?: BodyStream;
  /** Reads are one at a time. */
  reading?: Promise<unknown>;
}

const toArrayBuffer = (b: Uint8Array): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;

export class ActorStreams {
  private readonly open = new Map<number, Open>();
  /** Bumped when a request ends: a call's answer that arrives later is not the next request's. */
  private gen = 0;

  get generation(): number { return this.gen; }
  get size(): number { return this.open.size; }

  /** Bytes held for uploads not yet read by their actors. */
  heldBytes(): number {
    let n = 0;
    for (const o of this.open.values()) n += o.upload?.buffered ?? 0;
    return n;
  }

  /** A streamed request body for call `id`: what the worker writes, the actor reads. */
  upload(id: number): ChunkPipe {
    if (this.open.has(id)) throw new TypeError(`stub.fetch(): call ${id} is already under way`);
    const pipe = new ChunkPipe(UPLOAD_WINDOW_BYTES);
    this.open.set(id, { upload: pipe });
    return pipe;
  }

  /** The worker's next chunk (null: the end). Settles when the window has room; rejects once the actor's request is over. */
  async write(id: number, chunk: ArrayBuffer | null): Promise<void> {
    const pipe = this.open.get(id)?.upload;
    if (!pipe) throw new ActorStreamError(`stub.fetch(): call ${id} has no request body open`);
    if (chunk === null) { pipe.end(); this.forgetIfDone(id); return; }
    await pipe.write(new Uint8Array(chunk));
  }

  /**
   * Registers the actor's streamed response of call `id`, unless the request that made the
   * call (generation `gen`) is over: false then, and the caller cancels it.
   */
  download(id: number, stream: BodyStream, gen = this.gen): boolean {
    if (gen !== this.gen) return false;
    const o = this.open.get(id) ?? {};
    o.download = stream;
    this.open.set(id, o);
    return true;
  }

  /** The next chunk of call `id`'s response body, or null at its end. */
  read(id: number): Promise<ArrayBuffer | null> {
    const o = this.open.get(id);
    const stream = o?.download;
    if (!o || !stream) return Promise.reject(new ActorStreamError(`stub.fetch(): call ${id} has no response body open (finished, cancelled, or its request ended)`));
    const next = (o.reading ?? Promise.resolve()).then(async () => {
      if (o.download !== stream) throw new ActorStreamError(`stub.fetch(): call ${id}'s response body was cancelled`);
      let c: Uint8Array | null;
      try {
        c = await stream.read();
      } catch (err) {
        o.download = undefined;
        this.forgetIfDone(id);
        throw err;
      }
      if (c === null) { o.download = undefined; this.forgetIfDone(id); return null; }
      return toArrayBuffer(c);
    });
    o.reading = next.catch(() => undefined);
    return next;
  }

  /** The worker is done with call `id` (cancelled its body, aborted, its source failed): both bodies end. */
  cancel(id: number, reason: string): void {
    const o = this.open.get(id);
    if (!o) return;
    this.open.delete(id);
    o.upload?.error(reason);
    o.download?.cancel(reason);
  }

  /** The request ended, or the isolate is gone: every body still open is cancelled. */
  closeAll(reason: string): void {
    this.gen += 1;
    if (this.open.size === 0) return; // every request's end comes here
    for (const id of [...this.open.keys()]) this.cancel(id, reason);
  }

  private forgetIfDone(id: number): void {
    const o = this.open.get(id);
    if (o && !o.download && (!o.upload || o.upload.closed)) this.open.delete(id);
  }
}
