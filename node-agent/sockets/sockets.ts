import type { WebSocket } from 'ws';

// WebSockets on the host, whatever carries them. A HostSocket is one end of a message
// channel as the agent sees it: the HTTP client's connection (fromWebSocket), the client
// end of a WebSocketPair whose server end lives in an isolate (isolate-sockets.ts), or
// (later) a socket of an actor on another agent, carried over NATS subjects. Any two
// ends are joined with bridge(); the code on either side never knows which kind the
// other is.
//
// Close works as in the WebSocket protocol, one direction at a time:
//   close(code, reason)   this side is done sending (a close frame goes out);
//   onClose(code, reason) the other side is done sending (its close frame came in).
// A socket is over once both happened. Each fires or acts once; sends after close()
// and messages after onClose are dropped. A transport that dies reports onClose with
// 1006 (or the code the failure implies, e.g. 1009 for an oversized message).

export type SocketData = string | Uint8Array;

/**
 * Told once when a message has left the agent's hands (written to the network, published,
 * queued for an isolate) or was dropped: whoever sent it counts its backlog with this.
 */
export type SentCallback = () => void;

export interface HostSocketHandlers {
  /**
   * A message from the other side: text as a string, binary as bytes. `sent`, when given,
   * must be called once the message is passed on or dropped (bridge() hands it to send()).
   */
  onMessage(data: SocketData, sent?: SentCallback): void;
  /** The other side closed (or the transport died); nothing more will arrive. */
  onClose(code: number, reason: string): void;
}

export interface HostSocket {
  /**
   * Sends one message to the other side; ignored once close() was called. `sent` is
   * called once the message has left the agent (or was dropped).
   */
  send(data: SocketData, sent?: SentCallback): void;
  /** This side is done sending; the other side sees onClose(code, reason). Idempotent. */
  close(code: number, reason: string): void;
  /**
   * Starts delivering what the other side sends. Anything that arrived before is
   * delivered first, in order. A socket is attached once.
   */
  attach(handlers: HostSocketHandlers): void;
  /** close() was called on this end. */
  readonly closed: boolean;
}

/** Largest message a WebSocket may carry, either way, unless the agent is told otherwise. */
export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;
/** Close reasons are at most 123 bytes of UTF-8 (RFC 6455 5.5: a control frame carries 125 bytes). */
export const MAX_CLOSE_REASON_BYTES = 123;

type Pending = { data: SocketData; sent: SentCallback | undefined } | { code: number; reason: string };

/** The bookkeeping every HostSocket shares: buffering before attach, each close once. */
export abstract class BaseHostSocket implements HostSocket {
  private handlers: HostSocketHandlers | null = null;
  private pending: Pending[] = [];
  private localClosed = false;
  private remoteClosed = false;

  get closed(): boolean { return this.localClosed; }
  /** The other side closed: nothing more arrives. */
  get peerClosed(): boolean { return this.remoteClosed; }
  get attached(): boolean { return this.handlers !== null; }

  /**
   * For a socket nobody will attach (it left the registry unclaimed): drops what waits for
   * a reader, telling each message's sender it is gone.
   */
  discardPending(): void {
    if (this.handlers) return;
    const pending = this.pending;
    this.pending = [];
    for (const p of pending) if ('data' in p) p.sent?.();
  }

  attach(handlers: HostSocketHandlers): void {
    if (this.handlers) throw new Error('this socket is already attached');
    this.handlers = handlers;
    const pending = this.pending;
    this.pending = [];
    for (const p of pending) {
      if ('data' in p) handlers.onMessage(p.data, p.sent);
      else handlers.onClose(p.code, p.reason);
    }
  }

  send(data: SocketData, sent?: SentCallback): void {
    if (this.localClosed) { sent?.(); return; }
    this.transmit(data, sent);
  }

  close(code: number, reason: string): void {
    if (this.localClosed) return;
    this.localClosed = true;
    this.transmitClose(code, reason);
  }

  /** For subclasses: a message from the other side. */
  protected emitMessage(data: SocketData, sent?: SentCallback): void {
    if (this.remoteClosed) { sent?.(); return; }
    if (this.handlers) this.handlers.onMessage(data, sent);
    else this.pending.push({ data, sent });
  }

  /** For subclasses: the other side closed. */
  protected emitClose(code: number, reason: string): void {
    if (this.remoteClosed) return;
    this.remoteClosed = true;
    if (this.handlers) this.handlers.onClose(code, reason);
    else this.pending.push({ code, reason });
  }

  /** Carries one message to the other side (never called after close()); calls `sent` once it left or was dropped. */
  protected abstract transmit(data: SocketData, sent: SentCallback | undefined): void;
  /** Carries the close to the other side (called once). */
  protected abstract transmitClose(code: number, reason: string): void;
}

/** Joins two ends: what arrives on one is sent on the other, closes included, both ways. */
export function bridge(a: HostSocket, b: HostSocket): void {
  a.attach({ onMessage: (data, sent) => b.send(data, sent), onClose: (code, reason) => b.close(code, reason) });
  b.attach({ onMessage: (data, sent) => a.send(data, sent), onClose: (code, reason) => a.close(code, reason) });
}

class MemorySocket extends BaseHostSocket {
  peer!: MemorySocket;
  protected transmit(data: SocketData, sent: SentCallback | undefined): void {
    const copy = typeof data === 'string' ? data : data.slice();
    queueMicrotask(() => { sent?.(); this.peer.emitMessage(copy); });
  }
  protected transmitClose(code: number, reason: string): void {
    queueMicrotask(() => this.peer.emitClose(code, reason));
  }
}

/**
 * Two connected ends in memory (for tests, and for joining sockets on one agent):
 * what one sends the other receives, asynchronously and in order.
 */
export function socketPair(): [HostSocket, HostSocket] {
  const a = new MemorySocket();
  const b = new MemorySocket();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

/** A close code that may go on the wire (RFC 6455 7.4, as the ws library checks it). */
export function isWireCloseCode(code: number): boolean {
  return Number.isInteger(code) && ((code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999));
}

/** The longest prefix of `reason` that fits a close frame, cut on a character boundary. */
export function closeReason(reason: string): string {
  if (Buffer.byteLength(reason) <= MAX_CLOSE_REASON_BYTES) return reason;
  let out = '';
  let size = 0;
  for (const ch of reason) {
    const n = Buffer.byteLength(ch);
    if (size + n > MAX_CLOSE_REASON_BYTES) break;
    out += ch;
    size += n;
  }
  return out;
}

/** What a failure of the ws library's receiver means as a close code. */
const WS_ERROR_CLOSE_CODES: Record<string, number> = {
  WS_ERR_UNSUPPORTED_MESSAGE_LENGTH: 1009,
  WS_ERR_INVALID_UTF8: 1007,
};

export interface WebSocketAdapterOptions {
  /**
   * Bytes queued for the client (sent but not yet written to the network) past which
   * the connection is closed with 1008: a client that stops reading cannot make the
   * agent hold an unbounded backlog, whoever sends to it.
   */
  maxBufferedBytes?: number;
}

/** Per connection, the transport's own bound (an isolate's sockets are held to tighter ones first). */
export const DEFAULT_MAX_BUFFERED_BYTES = 16 * 1024 * 1024;
/**
 * After a close, a connection whose backlog did not shrink over this long is cut: its
 * client is not reading, so it would never see the close frame behind the backlog, and
 * the agent would hold that backlog for the ws library's 30 s close timeout.
 */
const CLOSE_PROGRESS_MS = 5000;

class WsSocket extends BaseHostSocket {
  private failureCode: number | undefined;
  private closeWatch: NodeJS.Timeout | undefined;

  constructor(private readonly ws: WebSocket, private readonly maxBuffered: number) {
    super();
    ws.on('message', (data, isBinary) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      this.emitMessage(isBinary ? new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength) : buf.toString('utf8'));
    });
    // The close event follows; remember what went wrong so it carries a meaningful code.
    ws.on('error', (err) => { this.failureCode ??= WS_ERROR_CLOSE_CODES[err.code ?? ''] ?? 1002; });
    ws.on('close', (code, reason) => {
      if (this.closeWatch) clearInterval(this.closeWatch);
      this.emitClose(code === 1006 && this.failureCode !== undefined ? this.failureCode : code, reason.toString('utf8'));
    });
  }

  protected transmit(data: SocketData, sent: SentCallback | undefined): void {
    if (this.ws.readyState !== 1) { sent?.(); return; }
    if (this.ws.bufferedAmount > this.maxBuffered) {
      sent?.();
      this.close(1008, 'the client is not reading its messages');
      return;
    }
    // ws calls back once the frame is written to the socket, or failed (the connection
    // closed): either way the agent no longer holds it.
    if (sent) this.ws.send(data, () => sent());
    else this.ws.send(data);
  }

  protected transmitClose(code: number, reason: string): void {
    if (this.ws.readyState > 1) return;
    if (code === 1005) this.ws.close();
    else this.ws.close(isWireCloseCode(code) ? code : 1011, closeReason(reason));
    if (this.ws.bufferedAmount > 0) this.watchClose();
  }

  private watchClose(): void {
    let last = this.ws.bufferedAmount;
    this.closeWatch = setInterval(() => {
      const now = this.ws.bufferedAmount;
      if (this.ws.readyState === 3) clearInterval(this.closeWatch);
      else if (now > 0 && now >= last) { clearInterval(this.closeWatch); this.ws.terminate(); }
      last = now;
    }, CLOSE_PROGRESS_MS);
    this.closeWatch.unref();
  }
}

/** A WebSocket connection accepted by the ws library, as a HostSocket. */
export function fromWebSocket(ws: WebSocket, opts: WebSocketAdapterOptions = {}): HostSocket {
  return new WsSocket(ws, opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES);
}

/** A socket held to the outgoing backlog bound of its isolate: closed by the host (count it). */
export interface SocketObserver {
  /** A socket of `worker` was closed because its client was not reading (or its isolate's backlog was full). */
  backlogClosed?(worker: string): void;
}

export interface SocketRegistryOptions {
  /** Largest message either way (default 1 MiB): bigger ones close the socket with 1009. */
  maxMessageBytes?: number;
  /**
   * Bytes an isolate may have sent on one socket that are not written to the network yet
   * (default 8 MiB): past that the socket is closed, 1008 for the client.
   */
  maxSocketBacklogBytes?: number;
  /**
   * The same, over all of one isolate's sockets (default 32 MiB, and never more than a
   * quarter of the isolate's memoryMiB): past that the socket with the largest backlog is
   * closed, and a send that still does not fit throws.
   */
  maxIsolateBacklogBytes?: number;
  observer?: SocketObserver;
}

export const DEFAULT_MAX_SOCKET_BACKLOG_BYTES = 8 * 1024 * 1024;
export const DEFAULT_MAX_ISOLATE_BACKLOG_BYTES = 32 * 1024 * 1024;

/**
 * The agent's open sockets, numbered. An isolate that answers a WebSocket upgrade
 * registers the client end of its pair here, and the response carries the number
 * (DispatchResponse.webSocket); whoever completes the handshake looks it up. An entry
 * leaves the registry when its socket is over.
 */
export class SocketRegistry {
  readonly maxMessageBytes: number;
  readonly maxSocketBacklogBytes: number;
  readonly maxIsolateBacklogBytes: number;
  readonly observer: SocketObserver;
  private next = 1;
  private readonly sockets = new Map<number, HostSocket>();
  /** Bytes isolates sent that are not written to the network yet, by worker (for the metric). */
  private readonly backlog = new Map<string, number>();

  constructor(opts: SocketRegistryOptions = {}) {
    this.maxMessageBytes = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    // A message must always fit an empty backlog.
    this.maxSocketBacklogBytes = Math.max(opts.maxSocketBacklogBytes ?? DEFAULT_MAX_SOCKET_BACKLOG_BYTES, this.maxMessageBytes);
    this.maxIsolateBacklogBytes = Math.max(opts.maxIsolateBacklogBytes ?? DEFAULT_MAX_ISOLATE_BACKLOG_BYTES, this.maxMessageBytes);
    this.observer = opts.observer ?? {};
  }

  /** Adds (or with a negative delta, takes away) bytes of a worker's outgoing backlog. */
  countBacklog(worker: string, delta: number): void {
    const n = (this.backlog.get(worker) ?? 0) + delta;
    if (n <= 0) this.backlog.delete(worker);
    else this.backlog.set(worker, n);
  }

  /** Outgoing backlog bytes by worker, now. */
  backlogBytes(): ReadonlyMap<string, number> { return this.backlog; }

  register(socket: HostSocket): number {
    const id = this.next++;
    this.sockets.set(id, socket);
    return id;
  }

  get(id: number): HostSocket | undefined { return this.sockets.get(id); }

  delete(id: number): boolean { return this.sockets.delete(id); }

  get size(): number { return this.sockets.size; }
}
