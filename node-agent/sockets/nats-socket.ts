import { randomBytes } from 'node:crypto';
import type { NatsConnection, Subscription } from 'nats';
import { headers as natsHeaders } from 'nats';
import { SUBJECTS } from '../../common/nats.js';
import { BaseHostSocket, type SentCallback, type SocketData } from './sockets.js';

// A WebSocket whose two ends are on different agents (the client connected to one, the
// actor that accepted it lives on another), carried over two NATS subjects, one per
// direction. Frames are the message bytes with a header saying text/binary, or a close.
// The accepting side holds what it sends until the connecting side says hello, so the
// actor's first messages are not lost while the other side subscribes. Each side pings
// every PING_MS; a side that hears nothing for DEAD_MS treats the other as gone (1006).

const PING_MS = 10_000;
const DEAD_MS = 35_000;

type Role = 'accepting' | 'connecting';

export class NatsSocket extends BaseHostSocket {
  private readonly sub: Subscription;
  private readonly out: string;
  private ready: boolean;
  private held: { data?: SocketData; sent?: SentCallback; close?: { code: number; reason: string }; control?: Uint8Array }[] = [];
  /** The other side's control frames (the hibernation state of the socket: relay.ts). */
  onControl: ((info: unknown) => void) | undefined;
  private lastHeard = Date.now();
  private timer: NodeJS.Timeout;

  private constructor(private readonly nc: NatsConnection, readonly sid: string, role: Role) {
    super();
    const toActorSide = SUBJECTS.socket(sid, 'in');
    const toClientSide = SUBJECTS.socket(sid, 'out');
    this.out = role === 'accepting' ? toClientSide : toActorSide;
    this.ready = role === 'connecting';
    this.sub = nc.subscribe(role === 'accepting' ? toActorSide : toClientSide, { callback: (_err, msg) => this.receive(msg.headers?.get('t') ?? '', msg.headers?.get('code') ?? '', msg.data) });
    this.timer = setInterval(() => this.tick(), PING_MS);
    this.timer.unref();
  }

  /** The actor's side: a new socket id the other agent will connect to. */
  static accept(nc: NatsConnection): NatsSocket {
    return new NatsSocket(nc, randomBytes(12).toString('hex'), 'accepting');
  }

  /** The client's side of a socket the actor's agent accepted as `sid`. */
  static connect(nc: NatsConnection, sid: string): NatsSocket {
    if (!/^[0-9a-f]{24}$/.test(sid)) throw new TypeError(`not a socket id: ${sid}`);
    const s = new NatsSocket(nc, sid, 'connecting');
    s.frame('hello', '', new Uint8Array(0));
    return s;
  }

  private frame(t: string, code: string, data: Uint8Array): void {
    const h = natsHeaders();
    h.set('t', t);
    if (code) h.set('code', code);
    this.nc.publish(this.out, data, { headers: h });
  }

  private receive(t: string, code: string, data: Uint8Array): void {
    this.lastHeard = Date.now();
    switch (t) {
      case 'hello':
        this.ready = true;
        for (const h of this.held.splice(0)) {
          if (h.data !== undefined) this.transmit(h.data, h.sent);
          else if (h.control) this.frame('ctl', '', h.control);
          else if (h.close) this.transmitClose(h.close.code, h.close.reason);
        }
        return;
      case 'text': this.emitMessage(new TextDecoder().decode(data)); return;
      case 'binary': this.emitMessage(data.slice()); return;
      case 'ctl':
        try { this.onControl?.(JSON.parse(new TextDecoder().decode(data))); } catch { /* not ours */ }
        return;
      case 'close':
        this.emitClose(Number(code) || 1005, new TextDecoder().decode(data));
        this.maybeEnd();
        return;
      default: // ping
    }
  }

  private tick(): void {
    if (Date.now() - this.lastHeard > DEAD_MS) {
      this.emitClose(1006, 'the other agent went away');
      this.end();
      return;
    }
    if (this.ready && !this.closed) this.frame('ping', '', new Uint8Array(0));
  }

  protected transmit(data: SocketData, sent: SentCallback | undefined): void {
    if (!this.ready) { this.held.push({ data, sent }); return; }
    if (typeof data === 'string') this.frame('text', '', new TextEncoder().encode(data));
    else this.frame('binary', '', data);
    sent?.();
  }

  /** A control frame for the other side's onControl (not a message). */
  control(info: unknown): void {
    if (this.closed) return;
    const bytes = new TextEncoder().encode(JSON.stringify(info));
    if (!this.ready) this.held.push({ control: bytes });
    else this.frame('ctl', '', bytes);
  }

  protected transmitClose(code: number, reason: string): void {
    if (!this.ready) { this.held.push({ close: { code, reason } }); return; }
    this.frame('close', String(code), new TextEncoder().encode(reason));
    this.maybeEnd();
  }

  private maybeEnd(): void {
    if (this.closed && this.peerClosed) this.end();
  }

  private end(): void {
    clearInterval(this.timer);
    this.sub.unsubscribe();
  }
}
