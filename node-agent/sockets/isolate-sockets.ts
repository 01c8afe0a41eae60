import { BaseHostSocket, closeReason, type SocketData, type SocketRegistry } from './sockets.js';
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

export type SocketEvent =
  | { type: 'message'; data: SocketData }
  | { type: 'close'; code: number; reason: string };

/** The client end of a pair whose server end is in an isolate. */
export class IsolateSocket extends BaseHostSocket {
  /** The registry id (set when registered). */
  id = 0;

  constructor(
    /** The shim's number for the server end. */
    readonly local: number,
    private readonly sink: (socket: IsolateSocket, event: SocketEvent) => void,
  ) {
    super();
  }

  // The host side sends: an event for the isolate.
  protected transmit(data: SocketData): void { this.sink(this, { type: 'message', data }); }
  protected transmitClose(code: number, reason: string): void { this.sink(this, { type: 'close', code, reason }); }

  /** The isolate sent a message on the server end. */
  fromIsolate(data: SocketData): void { this.emitMessage(data); }
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

  constructor(
    private readonly registry: SocketRegistry,
    private readonly workerName: string,
    private readonly onEvent: (socket: IsolateSocket, event: SocketEvent) => void,
    private readonly onAllClosed: () => void,
  ) {}

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

  /** Host callback socketSend: the isolate sent a message on a server end. */
  send(local: number, data: unknown): void {
    let out: SocketData;
    let size: number;
    if (typeof data === 'string') {
      out = data;
      size = data.length > this.maxMessageBytes / 3 ? Buffer.byteLength(data) : data.length;
    } else if (data instanceof ArrayBuffer) {
      out = new Uint8Array(data);
      size = data.byteLength;
    } else {
      throw new TypeError(`worker ${this.workerName}: a WebSocket message must be a string or an ArrayBuffer`);
    }
    if (size > this.maxMessageBytes) {
      throw new SocketLimitError(`WebSocket.send: the message is ${size} bytes; the limit is ${this.maxMessageBytes}`);
    }
    this.forLocal(local)?.fromIsolate(out);
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
    if (notify && this.byId.size === 0) this.onAllClosed();
  }
}
