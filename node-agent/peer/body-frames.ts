import type { IncomingMessage, ServerResponse } from 'node:http';
import { once } from 'node:events';
import { BodyStreamError, ChunkPipe, type BodyStream } from '../../common/body-stream.js';
import { CallOutcomeUnknownError } from './protocol.js';

// A streamed actor response between agents. The owner sends the head once the actor's
// writes are committed (the output gate), then the body as frames: a frame is a type byte,
// a 4-byte big-endian length and the payload. Data frames carry the actor's chunks; a
// heartbeat frame goes while the actor is slow to produce and the caller is reading (the
// socket holds nothing unsent), so a caller waiting on a read can still tell a live owner
// from a paused or gone one (the silence bound of protocol.ts, past the head); an end
// frame ends the body, an error frame fails it with a message. Without the end frame, a
// body that stops is a broken one, never a short one.
//
// The pace is the caller's: the owner pulls the next chunk from the actor only once the
// socket took the last, and the caller reads the socket only as its worker reads.

export const FRAMED_HEADER = 'x-edge-body';
/** FRAMED_HEADER's value on a response whose body is frames; on a request, STREAMED: its body is streamed. */
export const FRAMED = 'framed';
export const STREAMED = 'stream';

const DATA = 1;
const HEARTBEAT = 2;
const END = 3;
const ERROR = 4;
const HEAD_BYTES = 5;
/** A frame longer than this is a broken stream (a chunk is at most what a ReadableStream enqueued, cut here). */
const MAX_FRAME_BYTES = 1024 * 1024;
/**
 * How long the owner waits for a caller that takes nothing (its socket full) before it
 * cancels the body: a paused or wedged calling agent must not hold an actor's input gate
 * for ever. A live caller's own limits end its reads long before (a worker's wall limit).
 */
export const STALLED_CALLER_MS = 120_000;
/** What the caller holds parsed before it stops reading the socket. */
const READ_WINDOW_BYTES = 256 * 1024;

function frame(type: number, payload?: Uint8Array): Buffer {
  const head = Buffer.allocUnsafe(HEAD_BYTES);
  head[0] = type;
  head.writeUInt32BE(payload?.byteLength ?? 0, 1);
  return payload && payload.byteLength > 0 ? Buffer.concat([head, payload]) : head;
}

/**
 * Owner side: writes `body` to `res` as frames, pulling a chunk only once the socket took
 * the last one. The caller going away cancels the body (that reaches the actor).
 */
export async function sendFramedBody(res: ServerResponse, body: BodyStream, heartbeatMs: number, stalledMs = STALLED_CALLER_MS): Promise<void> {
  let gone = false;
  const onClose = () => { if (!res.writableFinished) { gone = true; body.cancel('the calling agent closed the connection'); } };
  // Gone already (while the actor's head was being committed): no 'close' is coming.
  if (res.destroyed || res.socket?.destroyed !== false) { onClose(); return; }
  res.once('close', onClose);
  let lastWrite = performance.now();
  const beat = setInterval(() => {
    if (gone || res.destroyed || res.writableLength > 0 || performance.now() - lastWrite < heartbeatMs) return;
    lastWrite = performance.now();
    res.write(frame(HEARTBEAT));
  }, heartbeatMs);
  try {
    for (;;) {
      let chunk: Uint8Array | null;
      try {
        chunk = await body.read();
      } catch (err) {
        if (!gone) res.end(frame(ERROR, Buffer.from(err instanceof Error ? err.message : String(err), 'utf8').subarray(0, 4096)));
        return;
      }
      if (gone) { if (chunk !== null) body.cancel('the calling agent closed the connection'); return; }
      if (chunk === null) { res.end(frame(END)); return; }
      for (let at = 0; at < chunk.byteLength; at += MAX_FRAME_BYTES) {
        lastWrite = performance.now();
        if (!res.write(frame(DATA, chunk.subarray(at, at + MAX_FRAME_BYTES)))) {
          const ac = new AbortController();
          let timer: NodeJS.Timeout | undefined;
          const stalled = new Promise<'stalled'>((resolve) => { timer = setTimeout(() => resolve('stalled'), stalledMs); });
          try {
            if (await Promise.race([once(res, 'drain', { signal: ac.signal }), once(res, 'close', { signal: ac.signal }), stalled]) === 'stalled') {
              gone = true;
              body.cancel(`the calling agent took nothing for ${stalledMs / 1000} s`);
              res.destroy();
              return;
            }
          } catch { /* aborted below */ } finally {
            clearTimeout(timer);
            ac.abort();
          }
        }
      }
    }
  } finally {
    clearInterval(beat);
    res.off('close', onClose);
  }
}

/**
 * Caller side: the framed body of `res` as a BodyStream. A read that waits longer than
 * `silenceMs` for any frame (data or heartbeat) fails the body: the owner went silent.
 * `abort` drops the connection (cancel(), or a broken stream).
 */
export function receiveFramedBody(res: IncomingMessage, silenceMs: number, abort: (err: Error) => void): BodyStream {
  let buf: Buffer = Buffer.alloc(0);
  let failed = false;
  let timer: NodeJS.Timeout | undefined;
  const pipe = new ChunkPipe(Number.MAX_SAFE_INTEGER, (reason) => { stop(); abort(new BodyStreamError(reason)); });
  const stop = () => {
    failed = true;
    if (timer) clearTimeout(timer);
    res.off('data', onData);
  };
  const fail = (err: Error) => {
    if (failed) return;
    stop();
    pipe.error(err);
    abort(err);
  };
  const onData = (c: Buffer) => {
    buf = buf.byteLength === 0 ? c : Buffer.concat([buf, c]);
    while (buf.byteLength >= HEAD_BYTES) {
      const type = buf[0]!;
      const len = buf.readUInt32BE(1);
      if (len > MAX_FRAME_BYTES) { fail(new BodyStreamError('malformed streamed body from the owner')); return; }
      if (buf.byteLength < HEAD_BYTES + len) break;
      const payload = buf.subarray(HEAD_BYTES, HEAD_BYTES + len);
      buf = buf.subarray(HEAD_BYTES + len);
      if (type === DATA) void pipe.write(new Uint8Array(payload)).catch(() => undefined);
      else if (type === END) { stop(); pipe.end(); return; }
      else if (type === ERROR) { stop(); pipe.error(new BodyStreamError(`the actor's response body failed: ${payload.toString('utf8')}`)); return; }
      else if (type !== HEARTBEAT) { fail(new BodyStreamError('malformed streamed body from the owner')); return; }
    }
    // Hold at most a window: the socket (and the owner, and the actor) wait for our reads.
    if (pipe.buffered >= READ_WINDOW_BYTES) res.pause();
    arm();
  };
  /** The silence bound runs only while a read waits: a caller that does not read is not the owner's silence. */
  let waiting = false;
  const arm = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (!waiting || failed) return;
    timer = setTimeout(() => fail(new CallOutcomeUnknownError(`the owner sent nothing for ${silenceMs} ms in the middle of a streamed response body`)), silenceMs);
  };
  res.on('data', onData);
  res.on('end', () => fail(new BodyStreamError('the streamed response body broke off (no end frame)')));
  res.on('error', (err) => fail(err));
  res.on('close', () => fail(new BodyStreamError('the connection to the owner closed in the middle of a streamed response body')));
  return {
    read: async () => {
      if (pipe.buffered < READ_WINDOW_BYTES && res.isPaused()) res.resume();
      waiting = true;
      arm();
      try {
        const c = await pipe.read();
        if (pipe.buffered < READ_WINDOW_BYTES && res.isPaused()) res.resume();
        return c;
      } finally {
        waiting = false;
        arm();
      }
    },
    cancel: (reason) => pipe.cancel(reason),
  };
}

/**
 * Owner side: a streamed request body as a BodyStream, once its first chunk (or its end)
 * arrived. The caller sends no body byte before our 100 Continue reached it, so a call
 * whose caller never saw the 100 never runs here (protocol.ts): waiting for the first
 * byte keeps that true. The socket is read only as the actor reads; cancel() stops reading
 * it (the caller's writes then wait, and end when its call does).
 */
export async function receiveStreamedRequest(req: IncomingMessage): Promise<BodyStream> {
  let stopped = false;
  const pipe = new ChunkPipe(Number.MAX_SAFE_INTEGER, () => { stopped = true; req.pause(); });
  req.on('data', (c: Buffer) => {
    if (stopped) return;
    void pipe.write(new Uint8Array(c)).catch(() => undefined);
    if (pipe.buffered >= READ_WINDOW_BYTES) req.pause();
  });
  req.once('end', () => pipe.end());
  req.once('close', () => { if (!req.complete) pipe.error(new BodyStreamError('the calling agent closed the connection before the request body ended')); });
  if (!req.readableEnded) {
    const started = await new Promise<boolean>((resolve) => {
      const go = (ok: boolean) => () => { req.off('data', yes); req.off('end', yes); req.off('close', no); resolve(ok); };
      const yes = go(true);
      const no = go(false);
      req.once('data', yes);
      req.once('end', yes);
      req.once('close', no);
    });
    if (!started) throw new BodyStreamError('the calling agent closed the connection before the request body began: the call did not run');
  }
  return {
    read: async () => {
      if (!stopped && pipe.buffered < READ_WINDOW_BYTES && req.isPaused()) req.resume();
      return pipe.read();
    },
    cancel: (reason) => pipe.cancel(reason),
  };
}
