import { BaseHostSocket, type SentCallback, type SocketData } from './sockets.js';

// The server end of a WebSocket an actor accepted with state.acceptWebSocket(): held by the
// agent, not by the actor's isolate, so the isolate can be evicted while the connection
// stays open (actors/hibernation.ts keeps these per actor, with their tags and attachment).
// Its other side is whatever carries the client (the HTTP front's connection, or a
// NatsSocket to the client's agent), joined with bridge(). What the client sends comes in
// through transmit() and goes to `onEvent`; what the actor sends goes out with toClient().

/** One event of a hibernatable socket for the actor: what actorEvent('ws', ...) carries. */
export type HibernationEvent =
  | { socket: number; type: 'message'; data: SocketData }
  | { socket: number; type: 'close'; code: number; reason: string; wasClean: boolean }
  | { socket: number; type: 'error'; message: string };

/** How the client's side of a socket ends, as the actor hears it. */
export type HibernationInput =
  | { type: 'message'; data: SocketData }
  | { type: 'close'; code: number; reason: string };

export class HibernatableSocket extends BaseHostSocket {
  /** The SocketRegistry id (the id the actor's isolate knows the socket by too). */
  id = 0;
  /** serializeAttachment()'s bytes (node:v8 serialize()), or null. */
  attachment: Uint8Array | null = null;
  /** When the agent last answered the auto-response request on this socket (ms since epoch). */
  autoResponseAt: number | null = null;
  /**
   * Set while the client is on another agent: told the socket's state whenever it changes,
   * so that agent can re-create it on the actor's next owner (relay.ts).
   */
  onChange: (() => void) | undefined;
  /** Events of this socket queued for the actor, and their message bytes. */
  queued = 0;
  queuedBytes = 0;

  constructor(
    /** actorInstanceKey of the actor that accepted it. */
    readonly actor: string,
    readonly tags: readonly string[],
    private readonly onInput: (socket: HibernatableSocket, input: HibernationInput) => void,
  ) {
    super();
  }

  // The client's side sent or closed.
  protected transmit(data: SocketData, sent: SentCallback | undefined): void {
    this.onInput(this, { type: 'message', data });
    sent?.();
  }
  protected transmitClose(code: number, reason: string): void {
    this.onInput(this, { type: 'close', code, reason });
  }

  /** The actor (or the agent's auto-response) sends to the client. */
  toClient(data: SocketData, sent?: SentCallback): void { this.emitMessage(data, sent); }
  /** The actor (or the agent) closes the server end: the client sees this close frame. */
  closeToClient(code: number, reason: string): void { this.emitClose(code, reason); }
}
