import { BaseHostSocket, closeReason, type SentCallback, type SocketData, type SocketRegistry } from './sockets.js';
import { EdgeError } from '../../common/errors.js';

// The sockets of one isolate. When a worker answers an upgrade with
// `new Response(null, { status: 101, webSocket: client })`, the client end of its
// WebSocketPair leaves the isolate and becomes an IsolateSocket on the host: what is sent
// on it becomes an event for the server end inside the isolate, and what the isolate
// sends on the server end comes out of it. The shim numbers the server ends it bridges
// (local ids, per isolate); the host registers each IsolateSocket in the agent's
// SocketRegistry, and everything outside the isolate uses that registry id.
//
// Events into the isolate run user code, so they are not run here: they go to the
// isolate's owner (SocketOwner in worker-isolate.ts), which runs them one at a time,
// never beside a request, with WorkerIsolate.deliver().
//
// What the isolate sends is host memory until the network takes it, so it is counted per
// socket and per isolate from socketSend until the transport reports it written (the
// SentCallback) and held to two bounds. A socket over its bound is closed: its client
// gets 1008 behind what it has not read (and is cut off if it never reads), the worker
// a close event 1006 saying why, and later sends on it are dropped, as workerd drops
// sends on a socket whose outgoing pump failed. Over the isolate's bound the socket with
// the largest backlog is closed the same way, and a send that still does not fit
// throws (RangeError in the worker): its bytes are still held until the cut-off
// connections are gone.

export type SocketEvent =
  | { type: 'message'; data: SocketData }
  | { type: 'close'; code: number; reason: string };

/** The client end of a pair whose server end is in an isolate. */
export class IsolateSocket extends BaseHostSocket {
  /** The registry id (set when registered). */
  id = 0;
  /** Bytes the isolate sent on this socket that are not written to the network yet. */
  backlog = 0;
  /** Closed by the host for its backlog: what the isolate sends on it is dropped. */
  overflowed = false;

  constructor(
    /** The shim's number for the server end. */
    readonly local: number,
    private readonly sink: (socket: IsolateSocket, event: SocketEvent) => void,
  ) {
    super();
  }

  // The host side sends: an event for the isolate (whose owner bounds the queue of them).
  protected transmit(data: SocketData, sent: SentCallback | undefined): void {
    this.sink(this, { type: 'message', data });
    sent?.();
  }
  protected transmitClose(code: number, reason: string): void { this.sink(this, { type: 'close', code, reason }); }

  /** The isolate sent a message on the server end. */
  fromIsolate(data: SocketData, sent?: SentCallback): void { this.emitMessage(data, sent); }
  /** The isolate closed the server end (or is gone). */
  closedByIsolate(code: number, reason: string): void { this.emitClose(code, reason); }
}

/**
 * A message over the agent's size limit. Not a RangeError subclass: isolated-vm passes only
 * the built-in types into an isolate, so the socketSend callback throws the RangeError the
 * worker sees (host-callbacks.ts).
 */
export class SocketLimitError extends EdgeError {}

/**
 * One isolate's sockets, and the host side of its socketSend/socketClose callbacks
 * (whose arguments come from the shim: every one is checked).
 */
export class IsolateSockets {
  private readonly byLocal = new Map<number, IsolateSocket>();
  private readonly byId = new Map<number, IsolateSocket>();
  /** Local ids at or below this were seen: a late call for a socket already over is ignored. */
  private highestLocal = 0;
  /** Bytes sent on all this isolate's sockets not written to the network yet. */
  private backlog = 0;
  private readonly maxIsolateBacklog: number;
  private readonly maxSocketBacklog: number;

  constructor(
    private readonly registry: SocketRegistry,
    private readonly workerName: string,
    private readonly onEvent: (socket: IsolateSocket, event: SocketEvent) => void,
    private readonly onAllClosed: () => void,
    /** The isolate's memory limit: its sockets' backlog is held to a quarter of it too. */
    memoryMiB?: number,
  ) {
    const share = memoryMiB === undefined ? Infinity : (memoryMiB * 1024 * 1024) / 4;
    this.maxIsolateBacklog = Math.max(Math.min(registry.maxIsolateBacklogBytes, share), registry.maxMessageBytes);
    this.maxSocketBacklog = Math.min(registry.maxSocketBacklogBytes, this.maxIsolateBacklog);
  }

  /** Bytes this isolate's sockets hold for the network. */
  get backlogBytes(): number { return this.backlog; }

  get size(): number { return this.byId.size; }
  get maxMessageBytes(): number { return this.registry.maxMessageBytes; }

  get(id: number): IsolateSocket | undefined { return this.byId.get(id); }

  /**
   * The socket for the shim's local id, made on first use: the shim may send on the
   * server end before the response that hands the client end out has left the isolate.
   */
  forLocal(local: number): IsolateSocket | undefined {
    if (!Number.isSafeInteger(local) || local < 1) throw new TypeError(`worker ${this.workerName}: bad socket id ${String(local)}`);
    const known = this.byLocal.get(local);
    if (known || local <= this.highestLocal) return known;
    this.highestLocal = local;
    const socket = new IsolateSocket(local, (s, e) => this.onEvent(s, e));
    socket.id = this.registry.register(socket);
    this.byLocal.set(local, socket);
    this.byId.set(socket.id, socket);
    return socket;
  }

  /**
   * Host callback socketSend: the isolate sent a message on a server end. Answers false
   * when the socket no longer carries messages (closed for its backlog): the shim then
   * drops later sends without calling back.
   */
  send(local: number, data: unknown): boolean {
    let out: SocketData;
    let size: number;
    if (typeof data === 'string') {
      out = data;
      size = Buffer.byteLength(data);
    } else if (data instanceof ArrayBuffer) {
      out = new Uint8Array(data);
      size = data.byteLength;
    } else {
      throw new TypeError(`worker ${this.workerName}: a WebSocket message must be a string or an ArrayBuffer`);
    }
    if (size > this.maxMessageBytes) {
      throw new SocketLimitError(`WebSocket.send: the message is ${size} bytes; the limit is ${this.maxMessageBytes}`);
    }
    const socket = this.forLocal(local);
    if (!socket) return true;
    if (socket.overflowed) return false;
    if (!this.fits(socket, size)) return false;
    socket.backlog += size;
    this.backlog += size;
    this.registry.countBacklog(this.workerName, size);
    let held = true;
    socket.fromIsolate(out, () => {
      if (!held) return;
      held = false;
      socket.backlog -= size;
      this.backlog -= size;
      this.registry.countBacklog(this.workerName, -size);
    });
    return !socket.overflowed;
  }

  /** Whether `size` more bytes may wait on `socket`; closes what is over its bound. */
  private fits(socket: IsolateSocket, size: number): boolean {
    if (socket.backlog + size > this.maxSocketBacklog) {
      this.overflow(socket, `the client is not reading: over ${this.maxSocketBacklog} bytes wait for it`);
      return false;
    }
    if (this.backlog + size <= this.maxIsolateBacklog) return true;
    // The slowest client is the one holding the most: it goes, unless what is over is held
    // by sockets closed already (their connections are cut off soon), and then this waits.
    let largest: IsolateSocket | undefined;
    for (const s of this.byId.values()) {
      if (!s.overflowed && s.backlog > 0 && (largest === undefined || s.backlog > largest.backlog)) largest = s;
    }
    if (largest) {
      this.overflow(largest, `the worker's sockets hold over ${this.maxIsolateBacklog} bytes for slow clients; this one held the most`);
      if (largest === socket) return false;
      if (this.backlog + size <= this.maxIsolateBacklog) return true;
    }
    throw new SocketLimitError(`WebSocket.send: ${this.backlog} bytes this isolate sent still wait for slow clients; ${size} more would pass the limit of ${this.maxIsolateBacklog}`);
  }

  /**
   * Closes a socket for its backlog: the client gets 1008 (the transport cuts it off if it
   * never reads that far), the worker a close event 1006 with the reason.
   */
  private overflow(socket: IsolateSocket, reason: string): void {
    if (socket.overflowed) return;
    socket.overflowed = true;
    this.registry.observer.backlogClosed?.(this.workerName);
    socket.closedByIsolate(1008, closeReason(reason));
    socket.close(1006, closeReason(reason));
  }

  /** Host callback socketClose: the isolate closed a server end (or answered the client's close). */
  close(local: number, code: unknown, reason: unknown): void {
    const c = Number(code);
    this.forLocal(local)?.closedByIsolate(Number.isInteger(c) ? c : 1005, closeReason(String(reason)));
  }

  /** A close event went into the isolate: the shim forgets the socket, and so does the host. */
  closeDelivered(socket: IsolateSocket): void {
    this.forget(socket);
  }

  /** The isolate is gone: every socket's other side sees it close. */
  closeAll(code: number, reason: string): void {
    for (const s of [...this.byId.values()]) {
      this.forget(s, false);
      s.closedByIsolate(code, closeReason(reason));
    }
  }

  private forget(socket: IsolateSocket, notify = true): void {
    if (!this.byId.delete(socket.id)) return;
    this.byLocal.delete(socket.local);
    this.registry.delete(socket.id);
    // Never handed to a client: what waited for one is dropped (and uncounted).
    socket.discardPending();
    if (notify && this.byId.size === 0) this.onAllClosed();
  }
}
