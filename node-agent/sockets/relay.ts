import { BaseHostSocket, type HostSocket, type SentCallback, type SocketData } from './sockets.js';

// The client's agent's end of a hibernatable WebSocket whose actor lives on another agent.
// The client's connection is bridged to this relay, and the relay to the socket that
// reaches the actor's owner (a NatsSocket). The owner sends the socket's hibernation state
// (actor, tags, attachment: SocketMirror) whenever it changes; when the owner goes away
// (the carrier reports 1006), the relay asks `adopt` for a socket on the actor's next
// owner, made from that state, and carries on over it: the client never sees the change.
// Messages the client sends while the relay moves wait (a few, then they are dropped:
// the owner's death already lost what was in flight).

/** What the client's agent keeps of a hibernatable socket to re-create it on another owner. */
export interface SocketMirror {
  namespace: string;
  actor: string;
  id: string;
  name?: string;
  tags: string[];
  /** serializeAttachment()'s bytes, base64; null when none. */
  attachment: string | null;
}

const MAX_WAITING = 256;

/** The carrier of a relay that is moving: attached to nothing, never sent to. */
const GONE: HostSocket = { send: (_d, sent) => sent?.(), close: () => undefined, attach: () => undefined, closed: true };

export class RelaySocket extends BaseHostSocket {
  mirror: SocketMirror | null = null;
  private waiting: { data: SocketData; sent: SentCallback | undefined }[] | null = null;

  constructor(private down: HostSocket, private readonly adopt: (mirror: SocketMirror) => Promise<HostSocket | null>) {
    super();
    this.join(down);
  }

  private join(down: HostSocket): void {
    this.down = down;
    down.attach({
      onMessage: (data, sent) => { if (this.down === down) this.emitMessage(data, sent); else sent?.(); },
      onClose: (code, reason) => { if (this.down === down) this.downClosed(code, reason); },
    });
  }

  /** Whether the relay is over (both sides closed): nothing more to move. */
  get over(): boolean { return this.closed && this.peerClosed; }

  /**
   * The owner left the ring (dead or draining): move now rather than wait for its NATS
   * socket to go silent. What it still sends is ignored from here on.
   */
  moveNow(reason: string): void {
    if (this.waiting || this.over || this.mirror === null) return;
    const old = this.down;
    this.down = GONE;
    old.close(1001, reason);
    this.downClosed(1006, reason);
  }

  private downClosed(code: number, reason: string): void {
    const mirror = this.mirror;
    if (code !== 1006 || mirror === null || this.closed) { this.emitClose(code, reason); return; }
    this.waiting = [];
    this.adopt(mirror).then((next) => {
      const waiting = this.waiting ?? [];
      this.waiting = null;
      if (!next) { for (const w of waiting) w.sent?.(); this.emitClose(1006, reason); return; }
      this.join(next);
      for (const w of waiting) next.send(w.data, w.sent);
      if (this.closed) next.close(1000, '');
    }, () => {
      for (const w of this.waiting ?? []) w.sent?.();
      this.waiting = null;
      this.emitClose(1006, reason);
    });
  }

  protected transmit(data: SocketData, sent: SentCallback | undefined): void {
    if (this.waiting) {
      if (this.waiting.length < MAX_WAITING) this.waiting.push({ data, sent });
      else sent?.();
      return;
    }
    this.down.send(data, sent);
  }

  protected transmitClose(code: number, reason: string): void {
    if (this.waiting) return; // sent to the next owner once it is there
    this.down.close(code, reason);
  }
}
