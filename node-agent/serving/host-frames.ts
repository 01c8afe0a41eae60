import { createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { Readable, Writable } from 'node:stream';
import { validateHeaderName, validateHeaderValue, type IncomingMessage, type ServerResponse } from 'node:http';
import { EdgeError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';

// The relay between an agent's front and its isolate hosts (docs/isolate-hosts.md, "Frames"):
// the front parses a client's HTTP once and sends each request to the host as frames on one
// Unix socket per host, many requests interleaved; the host answers in frames. Neither side
// writes or parses HTTP/1.1 between them. On this machine that shape answers a relayed
// isolate call for 0.55 of the CPU the same relay over HTTP takes (bench/relay-floor.ts).
//
// A frame: u32 LE length of what follows, u8 type, u32 LE stream id, payload. Bodies are
// flow-controlled per stream: a side sends DATA while fewer than WINDOW_BYTES it sent are
// unacknowledged, and acknowledges what it received once its consumer took it, so one slow
// client or handler holds at most a window in the other process, and never holds up the
// socket's other streams.
//
// Upgrades (WebSockets) stay on the host's HTTP socket: their connection is handed over whole.

export const FrameType = {
  /** Front to host: a request's head (JSON: method, url, raw headers, HTTP version, whether a body follows). */
  open: 1,
  /** Body bytes, either way. */
  data: 2,
  /** The body is over, either way. */
  end: 3,
  /** Either way: the stream is abandoned (the client went away; the host dropped the response). */
  reset: 4,
  /** Either way: u32 LE bytes of the stream's body the receiver has taken. */
  ack: 5,
  /** Host to front: the response's head (JSON: status, status text, raw headers). */
  head: 6,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** Response headers about the connection, not the response: the front writes its own. */
const CONNECTION_LEVEL = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'transfer-encoding']);

/** Unacknowledged body bytes a side may have sent on one stream. */
export const WINDOW_BYTES = 256 * 1024;
/** A body chunk larger than this goes as several DATA frames. */
export const DATA_FRAME_BYTES = 64 * 1024;
/** A frame longer than this is a protocol error: a head's headers are bounded by the front's parser, bodies by DATA_FRAME_BYTES. */
export const MAX_FRAME_BYTES = 1024 * 1024;
/** A response head over this is refused at writeHead (node's HTTP client refused heads over 16 KiB here before). */
export const MAX_HEAD_BYTES = 256 * 1024;
/** u32 length, u8 type, u32 stream id: the length counts what follows its own four bytes. */
const HEADER_BYTES = 9;

export interface OpenFrame { method: string; url: string; headers: string[]; httpVersion: string; body: boolean }
export interface HeadFrame { status: number; statusText: string; headers: string[] }

/** A frame the other side should never send: the connection it came on is closed. */
export class FrameProtocolError extends EdgeError {}

export function encodeFrame(type: FrameType, id: number, payload?: Buffer | string): Buffer {
  const len = payload === undefined ? 0 : typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
  const b = Buffer.allocUnsafe(HEADER_BYTES + len);
  b.writeUInt32LE(HEADER_BYTES - 4 + len, 0);
  b[4] = type;
  b.writeUInt32LE(id, 5);
  if (typeof payload === 'string') b.write(payload, HEADER_BYTES, 'utf8');
  else if (payload !== undefined) payload.copy(b, HEADER_BYTES);
  return b;
}

export function encodeAck(id: number, bytes: number): Buffer {
  const b = Buffer.allocUnsafe(HEADER_BYTES + 4);
  b.writeUInt32LE(HEADER_BYTES - 4 + 4, 0);
  b[4] = FrameType.ack;
  b.writeUInt32LE(id, 5);
  b.writeUInt32LE(bytes, HEADER_BYTES);
  return b;
}

/** Splits a byte stream into frames; throws FrameProtocolError on a frame over MAX_FRAME_BYTES. */
export function frameReader(onFrame: (type: number, id: number, payload: Buffer) => void): (chunk: Buffer) => void {
  let pending: Buffer | null = null;
  return (chunk) => {
    const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    let at = 0;
    while (buf.length - at >= HEADER_BYTES) {
      const len = buf.readUInt32LE(at);
      if (len < HEADER_BYTES - 4 || len > MAX_FRAME_BYTES) throw new FrameProtocolError(`a frame of ${len} bytes`);
      if (buf.length - at - 4 < len) break;
      onFrame(buf[at + 4]!, buf.readUInt32LE(at + 5), buf.subarray(at + HEADER_BYTES, at + 4 + len));
      at += 4 + len;
    }
    pending = at < buf.length ? buf.subarray(at) : null;
  };
}

/** Writes leave corked, once per event-loop turn, as one writev: a burst of answers is one syscall. */
export function corkedWriter(sock: Socket): (b: Buffer) => void {
  let corked = false;
  const flush = (): void => { corked = false; sock.uncork(); };
  return (b) => {
    if (sock.destroyed) return;
    if (!corked) { corked = true; sock.cork(); process.nextTick(flush); }
    sock.write(b);
  };
}

export const ackOf = (payload: Buffer): number => (payload.length >= 4 ? payload.readUInt32LE(0) : 0);

/** What the host's HttpFront reads of a request's socket: its peer is the front, which sends the client's address as CF-Connecting-IP. */
interface FramedSocket { remoteAddress: undefined; destroy(): void }

/**
 * A request that arrived as frames, with what the host's HttpFront (and a shard forward)
 * reads of an IncomingMessage: the head, the body as a stream, `complete`.
 */
export class FramedRequest extends Readable {
  readonly method: string;
  readonly url: string;
  readonly rawHeaders: string[];
  readonly httpVersion: string;
  readonly socket: FramedSocket;
  private byName: Record<string, string> | undefined;
  complete = false;
  /** Body bytes pushed and not yet acknowledged to the front. */
  private owed = 0;

  constructor(open: OpenFrame, private readonly ack: (bytes: number) => void, abandon: () => void) {
    super({ highWaterMark: 64 * 1024 });
    this.method = open.method;
    this.url = open.url;
    this.rawHeaders = open.headers;
    this.httpVersion = open.httpVersion;
    this.socket = { remoteAddress: undefined, destroy: abandon };
    // Whoever consumes the body listens for its failure; a request nobody reads must not
    // take the process down when its client goes away.
    this.on('error', () => undefined);
    if (!open.body) this.finishBody();
  }

  /**
   * The headers by lower-case name, built when first read (HttpFront reads the raw ones;
   * a shard forward and an error page read a few by name). The first of a name wins.
   */
  get headers(): Record<string, string> {
    if (this.byName) return this.byName;
    const h: Record<string, string> = {};
    for (let i = 0; i + 1 < this.rawHeaders.length; i += 2) {
      const k = this.rawHeaders[i]!.toLowerCase();
      if (h[k] === undefined) h[k] = this.rawHeaders[i + 1]!;
    }
    this.byName = h;
    return h;
  }

  /** A DATA frame: acknowledged at once while the consumer keeps up, else when it reads again. */
  data(chunk: Buffer): void {
    if (this.complete || this.destroyed) return;
    if (this.push(chunk)) this.ack(chunk.length);
    else this.owed += chunk.length;
  }

  finishBody(): void {
    if (this.complete) return;
    this.complete = true;
    this.push(null);
  }

  override _read(): void {
    if (this.owed > 0) { const n = this.owed; this.owed = 0; this.ack(n); }
  }
}

/**
 * A response answered as frames, with what HttpFront, InFlight and a shard forward use of a
 * ServerResponse: writeHead, a Writable body paced by the front's acknowledgements, and
 * 'close' once it is over either way.
 */
export class FramedResponse extends Writable {
  headersSent = false;
  statusCode = 200;
  readonly req: FramedRequest;
  private readonly extra: string[] = [];
  private unacked = 0;
  private waiting: (() => void) | undefined;
  private ended = false;

  constructor(req: FramedRequest, private readonly send: (type: FrameType, payload?: Buffer | string) => void) {
    super({ highWaterMark: 16 * 1024 });
    this.req = req;
  }

  get socket(): FramedSocket | null { return this.destroyed ? null : this.req.socket; }

  setHeader(name: string, value: string | number): this {
    this.extra.push(name, String(value));
    return this;
  }

  writeHead(status: number, textOrHeaders?: string | Record<string, string | number> | string[], headers?: Record<string, string | number> | string[]): this {
    if (this.headersSent) return this;
    // ServerResponse's forms: (status, headers), (status, text, headers), (status, undefined, headers).
    let text = '';
    let h = headers;
    if (typeof textOrHeaders === 'string') text = textOrHeaders;
    else if (textOrHeaders !== undefined) h = textOrHeaders;
    const given = [...this.extra];
    if (Array.isArray(h)) for (const v of h) given.push(String(v));
    else if (h) for (const [k, v] of Object.entries(h)) given.push(k, String(v));
    const flat: string[] = [];
    for (let i = 0; i + 1 < given.length; i += 2) {
      // What ServerResponse refuses, refused here alike (the handler answers 500 instead): the
      // front writes these headers to its client with node's HTTP server.
      validateHeaderName(given[i]!);
      validateHeaderValue(given[i]!, given[i + 1]!);
      // Connection-level headers (a drain's or an error's `Connection: close`) are the
      // front's own business with its client: they stay here.
      if (!CONNECTION_LEVEL.has(given[i]!.toLowerCase())) flat.push(given[i]!, given[i + 1]!);
    }
    if (!Number.isInteger(status) || status < 100 || status > 999) throw new RangeError(`invalid status code ${status}`);
    const head = JSON.stringify({ status, statusText: text, headers: flat } satisfies HeadFrame);
    if (head.length > MAX_HEAD_BYTES) throw new RangeError(`a response head of ${head.length} bytes is over the relay's ${MAX_HEAD_BYTES}`);
    this.statusCode = status;
    this.headersSent = true;
    this.send(FrameType.head, head);
    return this;
  }

  /** HTTP's head is a frame of its own here: sent at writeHead already. */
  flushHeaders(): void { if (!this.headersSent) this.writeHead(this.statusCode); }
  /** Interim responses belong to the peer port's forwarded requests, which never come as frames. */
  writeContinue(): void { /* the front answers a client's Expect itself */ }
  writeProcessing(): void { /* see writeContinue */ }

  /** An ACK frame: the front's client took `bytes`. */
  credit(bytes: number): void {
    this.unacked = Math.max(0, this.unacked - bytes);
    if (this.unacked < WINDOW_BYTES && this.waiting) { const w = this.waiting; this.waiting = undefined; w(); }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (!this.headersSent) this.writeHead(this.statusCode);
    for (let at = 0; at < chunk.length; at += DATA_FRAME_BYTES) this.send(FrameType.data, chunk.subarray(at, at + DATA_FRAME_BYTES));
    this.unacked += chunk.length;
    if (this.unacked < WINDOW_BYTES) cb();
    else this.waiting = () => cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.headersSent) this.writeHead(this.statusCode);
    this.ended = true;
    this.send(FrameType.end);
    cb();
  }

  override _destroy(_err: Error | null, cb: (err?: Error | null) => void): void {
    // Dropped before its end (as a ServerResponse is destroyed): the front cuts its client's
    // response short. An error given here is not re-raised: like a ServerResponse's, this
    // stream's failure is the client's to see, not the handler's to catch.
    if (!this.ended) this.send(FrameType.reset);
    this.waiting = undefined;
    cb();
  }
}

export type FramedHandler = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * The host's end: a Unix-socket listener whose connections carry framed requests, each handed
 * to `handler` as an IncomingMessage/ServerResponse look-alike.
 */
export class FrameServer {
  readonly server: Server;
  private readonly conns = new Set<Socket>();

  constructor(handler: FramedHandler, log: Logger) {
    this.server = createServer((conn) => {
      this.conns.add(conn);
      const streams = new Map<number, { req: FramedRequest; res: FramedResponse }>();
      const send = corkedWriter(conn);
      const drop = (): void => {
        this.conns.delete(conn);
        for (const s of streams.values()) { s.req.destroy(); s.res.destroy(); }
        streams.clear();
      };
      conn.on('close', drop);
      conn.on('error', () => { /* closed: 'close' follows */ });
      const read = frameReader((type, id, payload) => {
        if (type === FrameType.open) {
          if (streams.has(id)) throw new FrameProtocolError(`stream ${id} opened twice`);
          const open = JSON.parse(payload.toString('utf8')) as OpenFrame;
          // Its socket's destroy() (a shard forward gives up on the rest of a body) drops the stream.
          const req = new FramedRequest(open, (n) => send(encodeAck(id, n)), () => { req.destroy(); streams.get(id)?.res.destroy(); });
          const res = new FramedResponse(req, (t, p) => send(encodeFrame(t, id, p)));
          streams.set(id, { req, res });
          res.once('close', () => { streams.delete(id); if (!req.complete) req.destroy(); });
          try {
            handler(req as unknown as IncomingMessage, res as unknown as ServerResponse);
          } catch (err) {
            // This request's failure, not the connection's.
            log.error('a framed request\'s handler threw', { error: err });
            res.destroy();
          }
          return;
        }
        if (type !== FrameType.data && type !== FrameType.end && type !== FrameType.ack && type !== FrameType.reset) {
          throw new FrameProtocolError(`frame type ${type} from the front`);
        }
        const s = streams.get(id);
        // A stream this side already dropped: its late frames mean nothing.
        if (!s) return;
        switch (type) {
          case FrameType.data: s.req.data(payload); return;
          case FrameType.end: s.req.finishBody(); return;
          case FrameType.ack: s.res.credit(ackOf(payload)); return;
          case FrameType.reset:
            // The client went away: the handler sees its request fail and its response close.
            streams.delete(id);
            if (!s.req.complete) s.req.destroy(new Error('aborted'));
            s.res.destroy();
            return;
        }
      });
      conn.on('data', (chunk: Buffer) => {
        try {
          read(chunk);
        } catch (err) {
          log.error('the front sent a malformed frame; closing its connection', { error: err });
          conn.destroy();
        }
      });
    });
  }

  async listen(path: string): Promise<void> {
    this.server.listen(path);
    await once(this.server, 'listening');
  }

  /** Stops listening and closes every connection (streams still open end as if the front went away). */
  close(): void {
    this.server.close();
    for (const c of this.conns) c.destroy();
  }
}
