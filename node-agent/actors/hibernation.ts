import type { Logger } from '../../common/log.js';
import type { ActorConfig } from '../../common/nats.js';
import { EdgeError } from '../../common/errors.js';
import { ActorResetError } from './isolate.js';
import { actorInstanceKey } from '../../common/keys.js';
import { decodeValue, encodeValue } from '../bindings/actor-storage.js';
import type { HibernationCalls } from '../bindings/host-callbacks.js';
import { SocketLimitError } from '../sockets/isolate-sockets.js';
import { HibernatableSocket, type HibernationEvent, type HibernationInput } from '../sockets/hibernation.js';
import { closeReason, isWireCloseCode, type SocketData, type SocketRegistry } from '../sockets/sockets.js';
import type { SocketMirror } from '../sockets/relay.js';

// The agent's side of the Durable Objects WebSocket Hibernation API. A socket an actor
// accepts with state.acceptWebSocket() is a HibernatableSocket held here, with its tags,
// attachment and auto-response timestamp, per actor; none of it lives in the isolate, so
// the actor host may evict an actor whose only open sockets are these (after
// HIBERNATE_IDLE_MS without events) and the connections stay open. What a client sends
// is queued per actor and run, one event at a time in arrival order (so in order per
// socket), through the actor's input gate by `run`, which activates the actor first when
// it is not in memory: the constructor runs again, as on Cloudflare, and then the class's
// webSocketMessage / webSocketClose / webSocketError handler.
//
// The auto-response (setWebSocketAutoResponse) is answered here: a text message equal to
// the request gets the response from the agent, the timestamp is recorded, and the actor
// is neither woken nor told.
//
// Bounds. workerd reads a hibernatable socket's next message only once the event for the
// last one finished (LegacyHibernationManagerImpl::readLoop), so a flood is held back by
// TCP flow control. The agent's sockets are bridged (over NATS too), where a reader cannot
// pause, so the queue is bounded instead: past MAX_QUEUED_PER_SOCKET events of one socket,
// or MAX_QUEUED_BYTES_PER_ACTOR message bytes of one actor, the socket is closed with 1013
// (try again later) and the actor gets webSocketError for it. Attachments are at most
// workerd's MAX_ATTACHMENT_SIZE (16 KiB serialized; Cloudflare's docs said 2,048 bytes
// before 2025), tags 10 of 256 characters each, auto-response strings 2,048 bytes each,
// and one actor holds at most MAX_SOCKETS_PER_ACTOR sockets (Cloudflare's documented
// 32,768 per Durable Object).

/** An actor whose only open sockets are hibernatable is evicted after this long without an event (or its idleTimeoutSeconds, if shorter). */
export const HIBERNATE_IDLE_MS = 10_000;
export const MAX_SOCKETS_PER_ACTOR = 32_768;
export const MAX_ATTACHMENT_BYTES = 16 * 1024;
export const MAX_TAGS = 10;
export const MAX_TAG_LENGTH = 256;
export const MAX_AUTO_RESPONSE_BYTES = 2048;
export const MAX_QUEUED_PER_SOCKET = 1024;
export const MAX_QUEUED_BYTES_PER_ACTOR = 16 * 1024 * 1024;
/**
 * A socket accepted but never handed to a client (its WebSocketPair's other end was not
 * returned in a 101) is dropped after this long: an actor cannot pile up orphans.
 */
export const ORPHAN_MS = 30_000;

/** What workerd says of a connection that ended without a close frame. */
const DISCONNECTED = 'WebSocket disconnected without sending Close frame.';

/** An actor accepted more sockets than it may hold. */
export class TooManySocketsError extends EdgeError {}

export interface HibernationStats {
  /** Hibernatable sockets open on this agent. */
  sockets: number;
  /** Events run on an actor that was not in memory (it was activated for them). */
  wakes: number;
  /** Events delivered to actors. */
  events: number;
  /** Messages the agent answered with the auto-response. */
  autoResponses: number;
  /** Sockets closed because their actor did not keep up with them. */
  overflows: number;
}

export interface HibernationOptions {
  log: Logger;
  registry: SocketRegistry;
  /**
   * Runs one event on the actor through its input gate, activating it if it is not in
   * memory; `woke` says whether it had to be.
   */
  run(config: ActorConfig, id: string, event: HibernationEvent, name: string | undefined): Promise<void>;
  /** Whether the actor is in memory now (to count wakes). */
  isActive(key: string): boolean;
  maxQueuedPerSocket?: number;
  maxQueuedBytesPerActor?: number;
  /** Default ORPHAN_MS. */
  orphanMs?: number;
}

type Queued = { socket: HibernatableSocket; event: HibernationEvent; bytes: number };

class ActorSockets {
  readonly sockets = new Map<number, HibernatableSocket>();
  auto: { request: string; response: string } | null = null;
  eventTimeoutMs: number | null = null;
  readonly queue: Queued[] = [];
  queuedBytes = 0;
  running = false;

  /** The name the id was made from, when an activation knew it: a woken actor's state.id.name. */
  name: string | undefined;

  constructor(readonly key: string, public config: ActorConfig, readonly id: string, public workerDigest: string | undefined) {}

  /** Nothing to keep: the auto-response and event timeout are set again by the next activation's code. */
  get empty(): boolean { return this.sockets.size === 0 && this.queue.length === 0 && !this.running; }
}

const sizeOf = (data: SocketData): number => (typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength);

export class Hibernation {
  private readonly actors = new Map<string, ActorSockets>();
  private readonly counts: HibernationStats = { sockets: 0, wakes: 0, events: 0, autoResponses: 0, overflows: 0 };
  private readonly maxQueued: number;
  private readonly maxQueuedBytes: number;

  constructor(private readonly opts: HibernationOptions) {
    this.maxQueued = opts.maxQueuedPerSocket ?? MAX_QUEUED_PER_SOCKET;
    this.maxQueuedBytes = opts.maxQueuedBytesPerActor ?? MAX_QUEUED_BYTES_PER_ACTOR;
  }

  stats(): HibernationStats {
    let sockets = 0;
    for (const a of this.actors.values()) sockets += a.sockets.size;
    return { ...this.counts, sockets };
  }

  /** Whether the actor holds hibernatable sockets (the host evicts it sooner then). */
  holds(key: string): boolean { return (this.actors.get(key)?.sockets.size ?? 0) > 0; }

  /** Hibernatable sockets of one actor (for tests and /status). */
  socketCount(key: string): number { return this.actors.get(key)?.sockets.size ?? 0; }

  /** The hibernation callback of one activation of an actor (HostCallbacks.hibernation). */
  callsFor(config: ActorConfig, id: string, workerDigest?: string, name?: string): HibernationCalls {
    const key = actorInstanceKey(config.namespace, config.name, id);
    const group = (): ActorSockets => {
      let a = this.actors.get(key);
      if (!a) {
        a = new ActorSockets(key, config, id, workerDigest);
        this.actors.set(key, a);
      }
      a.config = config;
      if (workerDigest !== undefined) a.workerDigest = workerDigest;
      if (name !== undefined) a.name = name;
      return a;
    };
    const socketOf = (raw: unknown, what: string): HibernatableSocket => {
      const s = this.actors.get(key)?.sockets.get(Number(raw));
      if (!s) throw new TypeError(`${what}: not a WebSocket this Durable Object accepted (or it is closed)`);
      return s;
    };
    return (op, a, b, c) => {
      switch (op) {
        case 'accept': return this.accept(group(), a);
        case 'list': {
          const tag = a === null || a === undefined ? null : String(a);
          const out: number[] = [];
          for (const s of this.actors.get(key)?.sockets.values() ?? []) if (tag === null || s.tags.includes(tag)) out.push(s.id);
          return out;
        }
        case 'tags': return [...socketOf(a, 'state.getTags()').tags];
        case 'send': return this.send(socketOf(a, 'WebSocket.send()'), b);
        case 'close': {
          const s = socketOf(a, 'WebSocket.close()');
          const code = Number(b);
          s.closeToClient(Number.isInteger(code) && (code === 1005 || isWireCloseCode(code)) ? code : 1005, closeReason(String(c ?? '')));
          this.forgetIfOver(s);
          return undefined;
        }
        case 'attach': {
          const s = socketOf(a, 'WebSocket.serializeAttachment()');
          const bytes = encodeValue(b);
          if (bytes.byteLength > MAX_ATTACHMENT_BYTES) {
            throw new Error(`A WebSocket 'attachment' cannot be larger than ${MAX_ATTACHMENT_BYTES} bytes. 'attachment' was ${bytes.byteLength} bytes.`);
          }
          s.attachment = bytes;
          s.onChange?.();
          return undefined;
        }
        case 'attachment': {
          const s = socketOf(a, 'WebSocket.deserializeAttachment()');
          return s.attachment === null ? null : decodeValue(s.attachment);
        }
        case 'autoSet': {
          if (a === null || a === undefined) {
            const g = this.actors.get(key);
            if (g) { g.auto = null; this.dropIfEmpty(g); }
            return undefined;
          }
          const request = String(a);
          const response = String(b);
          for (const [what, s] of [['Request', request], ['Response', response]] as const) {
            const n = Buffer.byteLength(s);
            if (n > MAX_AUTO_RESPONSE_BYTES) throw new RangeError(`${what} cannot be larger than ${MAX_AUTO_RESPONSE_BYTES} bytes. A ${what.toLowerCase()} of size ${n} was provided.`);
          }
          group().auto = { request, response };
          return undefined;
        }
        case 'autoGet': {
          const auto = this.actors.get(key)?.auto;
          return auto ? [auto.request, auto.response] : null;
        }
        case 'autoTime': return socketOf(a, 'state.getWebSocketAutoResponseTimestamp()').autoResponseAt;
        case 'timeoutSet': {
          if (a === null || a === undefined) {
            const g = this.actors.get(key);
            if (g) { g.eventTimeoutMs = null; this.dropIfEmpty(g); }
          } else {
            group().eventTimeoutMs = Number(a);
          }
          return undefined;
        }
        case 'timeoutGet': return this.actors.get(key)?.eventTimeoutMs ?? null;
        default: throw new TypeError(`hibernation: unknown operation ${op.slice(0, 40)}`);
      }
    };
  }

  /** The state another agent needs to re-create `socket` on the actor's next owner. */
  describe(socket: HibernatableSocket): SocketMirror | undefined {
    const group = this.actors.get(socket.actor);
    if (!group || !group.sockets.has(socket.id)) return undefined;
    return {
      namespace: group.config.namespace, actor: group.config.name, id: group.id, ...(group.name !== undefined ? { name: group.name } : {}),
      tags: [...socket.tags], attachment: socket.attachment === null ? null : Buffer.from(socket.attachment).toString('base64'),
    };
  }

  /**
   * Re-creates a hibernatable socket whose owner went away, on this agent (the actor's
   * owner now), from the state the client's agent kept: its id, to hand to that agent.
   */
  adopt(config: ActorConfig, id: string, mirror: SocketMirror): number {
    const key = actorInstanceKey(config.namespace, config.name, id);
    let group = this.actors.get(key);
    if (!group) {
      group = new ActorSockets(key, config, id, undefined);
      this.actors.set(key, group);
    }
    if (mirror.name !== undefined) group.name = mirror.name;
    const sid = this.accept(group, mirror.tags);
    const socket = group.sockets.get(sid)!;
    if (mirror.attachment !== null) {
      const bytes = Buffer.from(mirror.attachment, 'base64');
      if (bytes.byteLength <= MAX_ATTACHMENT_BYTES) socket.attachment = new Uint8Array(bytes);
    }
    return sid;
  }

  private accept(group: ActorSockets, rawTags: unknown): number {
    if (!Array.isArray(rawTags)) throw new TypeError('state.acceptWebSocket(): the tags must be an array of strings');
    const tags = [...new Set(rawTags.map((t) => String(t)))];
    if (tags.length > MAX_TAGS) throw new Error(`a Hibernatable WebSocket cannot have more than ${MAX_TAGS} tags`);
    for (const t of tags) if (t.length > MAX_TAG_LENGTH) throw new Error(`"${t.slice(0, MAX_TAG_LENGTH + 1)}" is longer than the max tag length (${MAX_TAG_LENGTH} characters).`);
    if (group.sockets.size >= MAX_SOCKETS_PER_ACTOR) {
      throw new TooManySocketsError(`state.acceptWebSocket(): this Durable Object already holds ${MAX_SOCKETS_PER_ACTOR} WebSockets, the most one may`, { context: { actor: group.key } });
    }
    const socket = new HibernatableSocket(group.key, tags, (s, input) => this.input(s, input));
    socket.id = this.opts.registry.register(socket);
    group.sockets.set(socket.id, socket);
    const orphan = setTimeout(() => {
      if (socket.attached || !group.sockets.has(socket.id)) return;
      failed.add(socket);
      this.forget(group, socket);
    }, this.opts.orphanMs ?? ORPHAN_MS);
    orphan.unref();
    return socket.id;
  }

  private send(socket: HibernatableSocket, data: unknown): undefined {
    let out: SocketData;
    if (typeof data === 'string') out = data;
    else if (data instanceof ArrayBuffer) out = new Uint8Array(data);
    else throw new TypeError('WebSocket.send(): a message must be a string or an ArrayBuffer');
    const size = sizeOf(out);
    if (size > this.opts.registry.maxMessageBytes) {
      throw new SocketLimitError(`WebSocket.send: the message is ${size} bytes; the limit is ${this.opts.registry.maxMessageBytes}`);
    }
    // A client that stops reading is cut off by its transport's own bound (1008).
    socket.toClient(out);
    return undefined;
  }

  /** What a client sent or how it closed: answered here, or queued for the actor. */
  private input(socket: HibernatableSocket, input: HibernationInput): void {
    const group = this.actors.get(socket.actor);
    if (!group || !group.sockets.has(socket.id) || failed.has(socket)) {
      if (input.type === 'close') this.forgetIfOver(socket);
      return;
    }
    if (input.type === 'message') {
      const auto = group.auto;
      if (auto !== null && typeof input.data === 'string' && input.data === auto.request) {
        socket.autoResponseAt = Date.now();
        this.counts.autoResponses += 1;
        socket.toClient(auto.response);
        return;
      }
      const bytes = sizeOf(input.data);
      if (socket.queued >= this.maxQueued || group.queuedBytes + bytes > this.maxQueuedBytes) {
        this.overflow(group, socket);
        return;
      }
      this.enqueue(group, { socket, bytes, event: { socket: socket.id, type: 'message', data: input.data } });
      return;
    }
    // The client closed (or its connection died): answered at once, as workerd does with
    // web_socket_auto_reply_to_close, then the actor hears it.
    const wasClean = input.code !== 1006;
    if (!socket.peerClosed && wasClean) socket.closeToClient(input.code === 1005 ? 1000 : input.code, input.reason);
    this.enqueue(group, { socket, bytes: 0, event: { socket: socket.id, type: 'close', code: input.code, reason: wasClean ? input.reason : (input.reason || DISCONNECTED), wasClean } });
  }

  private overflow(group: ActorSockets, socket: HibernatableSocket): void {
    failed.add(socket);
    this.counts.overflows += 1;
    const message = `the Durable Object did not keep up with this WebSocket's messages (over ${this.maxQueued} waiting, or ${this.maxQueuedBytes} bytes for the object); closed with 1013`;
    this.opts.log.warn('hibernatable WebSocket flooded its actor; closing it', { actor: group.key, queued: socket.queued, queuedBytes: group.queuedBytes });
    socket.closeToClient(1013, 'the server is not keeping up with your messages');
    this.enqueue(group, { socket, bytes: 0, event: { socket: socket.id, type: 'error', message } });
  }

  private enqueue(group: ActorSockets, q: Queued): void {
    group.queue.push(q);
    group.queuedBytes += q.bytes;
    q.socket.queued += 1;
    q.socket.queuedBytes += q.bytes;
    void this.pump(group);
  }

  /** Runs the actor's queued events, one at a time. */
  private async pump(group: ActorSockets): Promise<void> {
    if (group.running) return;
    group.running = true;
    try {
      for (let q = group.queue.shift(); q !== undefined; q = group.queue.shift()) {
        group.queuedBytes -= q.bytes;
        q.socket.queued -= 1;
        q.socket.queuedBytes -= q.bytes;
        const ending = q.event.type !== 'message';
        try {
          if (!this.opts.isActive(group.key)) this.counts.wakes += 1;
          this.counts.events += 1;
          await this.opts.run(group.config, group.id, q.event, group.name);
        } catch (err) {
          this.opts.log.warn('hibernatable WebSocket event failed', { actor: group.key, socket: q.socket.id, event: q.event.type, error: err });
          // The actor was reset in this message's handler (a CPU or memory limit): nothing
          // will ever answer it, so the client is told now, as a reset disconnects on Workers,
          // instead of waiting on a reply (the Agents SDK's client waits 30 s per call).
          if (err instanceof ActorResetError && q.event.type === 'message' && !q.socket.peerClosed) q.socket.closeToClient(1011, 'the Durable Object was reset');
        } finally {
          if (ending) this.forget(group, q.socket);
        }
      }
    } finally {
      group.running = false;
      this.dropIfEmpty(group);
    }
  }

  private forgetIfOver(socket: HibernatableSocket): void {
    // Over once both sides closed and the actor was told (its close event left the queue).
    if (!socket.closed || !socket.peerClosed || socket.queued > 0) return;
    const group = this.actors.get(socket.actor);
    if (group) this.forget(group, socket);
  }

  private forget(group: ActorSockets, socket: HibernatableSocket): void {
    if (!group.sockets.delete(socket.id)) return;
    this.opts.registry.delete(socket.id);
    if (!socket.peerClosed) socket.closeToClient(1011, 'the WebSocket failed');
    this.dropIfEmpty(group);
  }

  private dropIfEmpty(group: ActorSockets): void {
    if (group.empty && this.actors.get(group.key) === group) this.actors.delete(group.key);
  }

  /**
   * The agent drains: a socket whose client is on another agent is let go with 1006 over
   * its NATS socket, which that agent takes as "the owner went away" and moves the socket
   * to the actor's next owner (relay.ts); the others close with 1001 (their clients are on
   * this agent, which is going away).
   */
  drain(): number {
    let moved = 0;
    for (const group of [...this.actors.values()]) {
      group.queue.length = 0;
      group.queuedBytes = 0;
      for (const s of [...group.sockets.values()]) {
        failed.add(s);
        if (s.onChange) { moved += 1; s.closeToClient(1006, 'the edge agent is draining: the WebSocket moves to the next owner'); }
        else s.closeToClient(1001, 'the edge agent is draining');
        group.sockets.delete(s.id);
        this.opts.registry.delete(s.id);
      }
      this.dropIfEmpty(group);
    }
    return moved;
  }

  /**
   * Closes the hibernatable sockets of the actors `which` selects (all by default): the
   * agent drains or stops, the DurableActor was deleted, or its worker changed (Cloudflare
   * disconnects every WebSocket on a code update). Their actors are not told.
   */
  closeAll(code: number, reason: string, which: (config: ActorConfig, workerDigest: string | undefined) => boolean = () => true): number {
    let n = 0;
    for (const group of [...this.actors.values()]) {
      if (!which(group.config, group.workerDigest)) continue;
      group.queue.length = 0;
      group.queuedBytes = 0;
      for (const s of [...group.sockets.values()]) {
        failed.add(s);
        s.closeToClient(code, reason);
        group.sockets.delete(s.id);
        this.opts.registry.delete(s.id);
        n += 1;
      }
      group.auto = null;
      group.eventTimeoutMs = null;
      this.dropIfEmpty(group);
    }
    return n;
  }
}

/** Sockets closed by the agent (flood, shutdown): what their clients still send is dropped. */
const failed = new WeakSet<HibernatableSocket>();
