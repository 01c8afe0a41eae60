import { createConnection, type Socket } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { EdgeError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import { hasRequestBody } from '../../common/http-message.js';
import {
  ackOf, corkedWriter, DATA_FRAME_BYTES, encodeAck, encodeFrame, frameReader, FrameProtocolError, FrameType, WINDOW_BYTES,
  type HeadFrame, type OpenFrame,
} from '../serving/host-frames.js';

// The front's end of the frame relay to one isolate host (serving/host-frames.ts has the
// format): one Unix-socket connection, opened when first needed and again after it closes,
// carrying every ordinary request the front relays to that host, interleaved.

/** A relayed request the host could not answer; `context.socket` says which host. */
export class HostRelayError extends EdgeError {
  constructor(message: string, socket: string, options?: { cause?: unknown }) {
    super(message, { ...options, context: { socket } });
  }
}

interface Stream {
  req: IncomingMessage;
  res: ServerResponse;
  /** The host sent the response's head: a failure now can only cut the response short. */
  head: boolean;
  /** Response bytes written to the client that it has not taken yet (acknowledged on 'drain'). */
  owed: number;
  /** Request body bytes sent that the host has not acknowledged. */
  unacked: number;
  paused: boolean;
  /** Nothing reached the client yet and the host cannot answer: the caller answers (a 503). */
  failed(err: Error): void;
}

export class FrameClient {
  private conn: Socket | undefined;
  private send: ((b: Buffer) => void) | undefined;
  private nextId = 1;
  private readonly streams = new Map<number, Stream>();

  constructor(private readonly path: string, private readonly log: Logger) {}

  /** Requests relayed now (for tests and the front's status). */
  get open(): number { return this.streams.size; }

  /**
   * Relays `req` (its head already read by the front's server) and answers `res` with the
   * host's response; `headers` are the request's raw headers as the host should see them.
   */
  relay(req: IncomingMessage, res: ServerResponse, headers: string[], failed: (err: Error) => void): void {
    const send = this.connection();
    let id = this.nextId;
    // After 2^32 requests on one connection the ids come round: one still open (a stream of
    // server-sent events, say) keeps its id.
    while (this.streams.has(id)) id = id >= 0xffff_fffe ? 1 : id + 1;
    this.nextId = id >= 0xffff_fffe ? 1 : id + 1;
    const body = hasRequestBody(req);
    const s: Stream = { req, res, head: false, owed: 0, unacked: 0, paused: false, failed };
    this.streams.set(id, s);
    const open: OpenFrame = { method: req.method ?? 'GET', url: req.url ?? '/', headers, httpVersion: req.httpVersion, body };
    send(encodeFrame(FrameType.open, id, JSON.stringify(open)));
    if (body) {
      req.on('data', (chunk: Buffer) => {
        if (this.streams.get(id) !== s) return;
        for (let at = 0; at < chunk.length; at += DATA_FRAME_BYTES) send(encodeFrame(FrameType.data, id, chunk.subarray(at, at + DATA_FRAME_BYTES)));
        s.unacked += chunk.length;
        // The host's handler has not taken a window's worth: the client waits in its socket.
        if (s.unacked >= WINDOW_BYTES && !s.paused) { s.paused = true; req.pause(); }
      });
      req.on('end', () => { if (this.streams.get(id) === s) send(encodeFrame(FrameType.end, id)); });
    }
    const gone = (): void => {
      if (this.streams.get(id) !== s) return;
      this.streams.delete(id);
      send(encodeFrame(FrameType.reset, id));
    };
    // The client gave up: the host stops its work on the request.
    res.on('close', () => { if (!res.writableFinished) gone(); });
    req.on('error', gone);
    res.on('drain', () => {
      if (s.owed > 0 && this.streams.get(id) === s) { send(encodeAck(id, s.owed)); s.owed = 0; }
    });
    // Answered before the client finished sending (the host's 408, 413, 503): the rest of
    // the body is nobody's, so the client's connection goes with it.
    if (body) res.on('finish', () => { if (!req.complete) req.socket.destroy(); });
  }

  /** Closes the connection: requests on it fail as if the host died. */
  close(): void { this.conn?.destroy(); }

  private connection(): (b: Buffer) => void {
    if (this.conn && this.send && !this.conn.destroyed) return this.send;
    const conn = createConnection(this.path);
    conn.setNoDelay(true);
    const send = corkedWriter(conn);
    this.conn = conn;
    this.send = send;
    const read = frameReader((type, id, payload) => this.onFrame(send, type, id, payload));
    conn.on('data', (chunk: Buffer) => {
      try {
        read(chunk);
      } catch (err) {
        this.log.error('an isolate host sent a malformed frame; closing its connection', { socket: this.path, error: err });
        conn.destroy();
      }
    });
    conn.on('error', (err) => { this.log.debug('isolate host connection failed', { socket: this.path, error: err }); });
    conn.on('close', () => {
      if (this.conn === conn) { this.conn = undefined; this.send = undefined; }
      const err = new HostRelayError('the isolate host closed its connection', this.path);
      for (const s of this.streams.values()) {
        if (s.head) s.res.destroy();
        else s.failed(err);
      }
      this.streams.clear();
    });
    return send;
  }

  private onFrame(send: (b: Buffer) => void, type: number, id: number, payload: Buffer): void {
    if (type !== FrameType.head && type !== FrameType.data && type !== FrameType.end && type !== FrameType.ack && type !== FrameType.reset) {
      throw new FrameProtocolError(`frame type ${type} from an isolate host`);
    }
    const s = this.streams.get(id);
    // A stream the front already dropped (its client left): the host's late frames mean nothing.
    if (!s) return;
    try {
      this.onStreamFrame(send, s, type, id, payload);
    } catch (err) {
      if (err instanceof FrameProtocolError) throw err;
      // One response the front cannot write (a head node refuses): that request fails, the
      // connection's other requests go on.
      this.log.warn('could not relay an isolate host\'s response', { socket: this.path, error: err });
      this.streams.delete(id);
      send(encodeFrame(FrameType.reset, id));
      if (s.res.headersSent) s.res.destroy();
      else s.failed(new HostRelayError('the isolate host\'s response could not be relayed', this.path, { cause: err }));
    }
  }

  private onStreamFrame(send: (b: Buffer) => void, s: Stream, type: number, id: number, payload: Buffer): void {
    switch (type) {
      case FrameType.head: {
        // Connection-level headers were left out by the host (FramedResponse.writeHead).
        const head = JSON.parse(payload.toString('utf8')) as HeadFrame;
        s.head = true;
        s.res.writeHead(head.status, head.statusText || undefined, head.headers);
        return;
      }
      case FrameType.data:
        if (s.res.write(payload) && s.owed === 0) send(encodeAck(id, payload.length));
        else s.owed += payload.length;
        return;
      case FrameType.end:
        this.streams.delete(id);
        s.res.end();
        return;
      case FrameType.ack:
        s.unacked = Math.max(0, s.unacked - ackOf(payload));
        if (s.paused && s.unacked < WINDOW_BYTES) { s.paused = false; s.req.resume(); }
        return;
      case FrameType.reset:
        this.streams.delete(id);
        // The host dropped it: before the head, nothing reached the client and the caller
        // answers; after, a truncated response is the honest signal.
        if (s.head) s.res.destroy();
        else s.failed(new HostRelayError('the isolate host dropped the request', this.path));
        return;
    }
  }
}
