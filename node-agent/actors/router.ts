import type { NatsConnection } from 'nats';
import type { Logger } from '../../common/log.js';
import type { ActorConfig } from '../../common/nats.js';
import type { ActorRunner } from './host.js';
import { actorInstanceKey } from '../../common/keys.js';
import type { ActorRingPort } from './ring.js';
import { NatsSocket } from '../sockets/nats-socket.js';
import { HibernatableSocket } from '../sockets/hibernation.js';
import { RelaySocket, type SocketMirror } from '../sockets/relay.js';
import * as z from 'zod';
import { bridge, type HostSocket, type SocketRegistry } from '../sockets/sockets.js';
import { forwardToPeer, PeerUnreachableError } from '../peer/peer-server.js';
import { ActorIds } from '../bindings/actor-id.js';
import { CallOutcomeUnknownError, ForeignActorIdError, NotHereError, SILENCE_MARGIN_MS, type PeerForwarder, type PeerHandler, type PeerRequest, type PeerResponse } from '../peer/protocol.js';
import { EdgeError } from '../../common/errors.js';

// Gets an actor call to the agent that owns the actor, from any agent: the ring of the
// DurableActor's region names the owner; the call runs here when that is us, else it is
// forwarded to the owner's peer port. A call is retried only when it certainly did not run
// (the owner said 421, could not be reached, or went silent before it took the whole
// request), so retries never apply a request twice; while the ring settles (an agent
// joined, drains or died) that can take a few rounds. A forwarded call waits on a silent
// owner no longer than the owner's presence TTL plus SILENCE_MARGIN_MS: by then the
// region has dropped an owner that is paused or gone, and the call is routed to the next
// one (when it certainly did not run) or fails with CallOutcomeUnknownError (when it may
// have: the caller cannot know, and must not be told it failed).

export interface ActorTarget { namespace: string; actor: string; uid: string }

export interface ActorRouterOptions {
  agent: string;
  ring: ActorRingPort;
  host: ActorRunner;
  log: Logger;
  /** The DurableActors this process hosts: calls forwarded to it run only for these. */
  config(namespace: string, actor: string): ActorConfig | undefined;
  /** Those its own workers may call (default `config`): every one of the region, hosted here or not. */
  callerConfig?(namespace: string, actor: string): ActorConfig | undefined;
  peerToken?: string;
  /** For WebSockets between agents. */
  nc?: NatsConnection;
  sockets?: SocketRegistry;
  /**
   * Hibernatable WebSockets (actors/hibernation.ts): their state goes with them to the
   * client's agent, which re-creates them on the actor's next owner when this one goes.
   */
  hibernation?: {
    describe(socket: HibernatableSocket): SocketMirror | undefined;
    adopt(config: ActorConfig, id: string, mirror: SocketMirror): number;
  };
  /** How long a call may wait for the ring to name a reachable owner. */
  routeTimeoutMs?: number;
  /** The agent-to-agent transport (default: HTTP to the owner's peer port). */
  forward?: PeerForwarder;
}

/** Forwarding stops after this many agent-to-agent hops; a call then runs where it is. */
const MAX_HOPS = 3;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class ActorUnavailableError extends EdgeError {}

/**
 * On an agent-to-agent call: "re-create this hibernatable socket here" (readopt). A
 * worker's stub.fetch() cannot send it (the actor binding drops it).
 */
export const ADOPT_SOCKET_HEADER = 'x-edge-adopt-socket';

const SocketMirrorSchema = z.object({
  namespace: z.string().max(253), actor: z.string().max(253), id: z.string().regex(/^[0-9a-f]{64}$/), name: z.string().max(4096).optional(),
  tags: z.array(z.string().max(256)).max(10), attachment: z.string().max(32 * 1024).nullable(),
}) satisfies z.ZodType<SocketMirror>;

export class ActorRouter implements PeerHandler {
  private readonly forward: PeerForwarder;
  /** Per DurableActor uid: checks the tag of ids that arrive from other agents. */
  private readonly ids = new Map<string, ActorIds>();

  /** Hibernatable sockets carried for clients here, and the agent that owns each one's actor. */
  private readonly relays = new Map<RelaySocket, { region: string; agent: string }>();

  constructor(private readonly opts: ActorRouterOptions) {
    this.forward = opts.forward ?? forwardToPeer;
    opts.ring.onChange(() => this.ringChanged());
  }

  /** Sockets whose owner left the ring (died or drains) move to their actor's next owner now. */
  private ringChanged(): void {
    const ring = this.opts.ring;
    if (!ring.agents) return;
    const live = new Map<string, Set<string>>();
    for (const [relay, at] of this.relays) {
      if (relay.over) { this.relays.delete(relay); continue; }
      let agents = live.get(at.region);
      if (!agents) { agents = new Set(ring.agents(at.region).map((p) => p.agent)); live.set(at.region, agents); }
      if (agents.has(at.agent) || relay.mirror === null) continue;
      this.relays.delete(relay);
      relay.moveNow(`agent ${at.agent} left the ring`);
    }
  }

  /** A worker's `stub.fetch()`. */
  async fetch(target: ActorTarget, id: string, req: PeerRequest): Promise<PeerResponse> {
    const cfg = (this.opts.callerConfig ?? this.opts.config)(target.namespace, target.actor);
    if (!cfg) throw new ActorUnavailableError(`DurableActor ${target.namespace}/${target.actor} is not available`);
    if (cfg.uid !== target.uid) throw new ActorUnavailableError(`DurableActor ${target.namespace}/${target.actor} was re-created; ids of the old one are void`);
    return this.route(cfg, id, req, 0);
  }

  /** A call forwarded by another agent. */
  async call(namespace: string, actor: string, id: string, req: PeerRequest, hops: number): Promise<PeerResponse> {
    const cfg = this.opts.config(namespace, actor);
    if (!cfg) throw new NotHereError(`DurableActor ${namespace}/${actor} is not known here`);
    // Only ids the DurableActor's own bindings could have made: a made-up id, or one of
    // another DurableActor, never reaches an activation or the actor log.
    let ids = this.ids.get(cfg.uid);
    if (!ids) {
      if (this.ids.size >= 1024) this.ids.clear();
      ids = new ActorIds(cfg.uid);
      this.ids.set(cfg.uid, ids);
    }
    if (!ids.owns(id)) throw new ForeignActorIdError(`${id.slice(0, 80)} is not an id of DurableActor ${namespace}/${actor}`, { context: { actor: `${namespace}/${actor}` } });
    const owner = this.opts.ring.owner(cfg.region, actorInstanceKey(namespace, actor, id));
    const res = owner && owner.agent !== this.opts.agent && hops < MAX_HOPS ? await this.route(cfg, id, req, hops) : await this.here(cfg, id, req);
    const out = this.socketOut(res);
    // The socket's subscription must be on the server before the other agent, told its
    // id by this answer, says hello or sends the first message.
    if (out.webSocketSid) await this.opts.nc!.flush();
    return out;
  }

  /** A WebSocket accepted here for a client on another agent: carry it over NATS. */
  private socketOut(res: PeerResponse): PeerResponse {
    if (res.webSocket === undefined) return res;
    const local = this.opts.sockets?.get(res.webSocket);
    if (!local || !this.opts.nc) throw new Error('the actor accepted a WebSocket this agent cannot carry');
    const remote = NatsSocket.accept(this.opts.nc);
    bridge(local, remote);
    this.opts.sockets!.delete(res.webSocket);
    const hib = this.opts.hibernation;
    if (local instanceof HibernatableSocket && hib) {
      const tell = () => { const m = hib.describe(local); if (m) remote.control(m); };
      local.onChange = tell;
      tell();
    }
    const { webSocket: _, ...rest } = res;
    return { ...rest, webSocketSid: remote.sid };
  }

  /** The other end of socketOut, on the client's agent. */
  private socketIn(res: PeerResponse, region: string, owner: string): PeerResponse {
    if (!res.webSocketSid) return res;
    if (!this.opts.nc || !this.opts.sockets) throw new Error('an actor answered with a WebSocket this agent cannot carry');
    const s = NatsSocket.connect(this.opts.nc, res.webSocketSid);
    const { webSocketSid: _, ...rest } = res;
    // A hibernatable socket's owner sends its state: kept here, to move it if the owner goes.
    const relay = new RelaySocket(s, (m) => this.readopt(m));
    if (this.relays.size >= 1024) for (const r of this.relays.keys()) if (r.over) this.relays.delete(r);
    this.relays.set(relay, { region, agent: owner });
    s.onControl = (info) => { const m = SocketMirrorSchema.safeParse(info); if (m.success) relay.mirror = m.data; };
    return { ...rest, webSocket: this.opts.sockets.register(relay) };
  }

  /** Runs a call on this agent: the actor's request, or the adoption of a socket whose owner went away. */
  private async here(cfg: ActorConfig, id: string, req: PeerRequest): Promise<PeerResponse> {
    const adopt = req.headers.find(([k]) => k === ADOPT_SOCKET_HEADER);
    if (!adopt) return this.opts.host.call(cfg, id, req);
    const mirror = SocketMirrorSchema.parse(JSON.parse(adopt[1]));
    if (!this.opts.hibernation || mirror.namespace !== cfg.namespace || mirror.actor !== cfg.name || mirror.id !== id) throw new Error('cannot adopt this WebSocket here');
    const webSocket = this.opts.hibernation.adopt(cfg, id, mirror);
    return { status: 101, statusText: 'Switching Protocols', headers: [], body: new Uint8Array(0), webSocket };
  }

  /**
   * The owner of a hibernatable socket this agent carries for its client went away:
   * re-creates the socket on the actor's owner now, from the state the old one sent.
   */
  private async readopt(mirror: SocketMirror): Promise<HostSocket | null> {
    const cfg = this.opts.config(mirror.namespace, mirror.actor);
    if (!cfg || !this.opts.sockets) return null;
    const key = actorInstanceKey(cfg.namespace, cfg.name, mirror.id);
    this.opts.log.info('the owner of a hibernated WebSocket went away: moving it to the actor\'s next owner', { actor: key });
    const res = await this.route(cfg, mirror.id, {
      url: 'http://edge.internal/adopt-socket', method: 'POST', headers: [[ADOPT_SOCKET_HEADER, JSON.stringify(mirror)]], body: null,
    }, 0);
    if (res.webSocket === undefined) return null;
    const next = this.opts.sockets.get(res.webSocket) ?? null;
    this.opts.sockets.delete(res.webSocket);
    return next;
  }

  private async route(cfg: ActorConfig, id: string, req0: PeerRequest, hops: number): Promise<PeerResponse> {
    const key = actorInstanceKey(cfg.namespace, cfg.name, id);
    // A streamed request body cannot be sent twice: once a byte of it went, the call is not routed again.
    let bodyRead = false;
    const upload = req0.stream;
    const req: PeerRequest = upload ? { ...req0, stream: { read: () => { bodyRead = true; return upload.read(); }, cancel: (r) => upload.cancel(r) } } : req0;
    const deadline = Date.now() + (this.opts.routeTimeoutMs ?? 10_000);
    let last = '';
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) {
        if (Date.now() > deadline) throw new ActorUnavailableError(`actor ${key}: no owner could take the call (${last})`);
        await sleep(Math.min(25 * attempt, 200));
      }
      const owner = this.opts.ring.owner(cfg.region, key);
      if (!owner) { last = `no live agent in ${cfg.region}`; continue; }
      try {
        if (owner.agent === this.opts.agent) return await this.here(cfg, id, req);
        if (!owner.peerAddress) { last = `agent ${owner.agent} has no peer address`; continue; }
        const silenceMs = owner.ttlMs + SILENCE_MARGIN_MS;
        const res = await this.forward(owner.peerAddress, cfg.namespace, cfg.name, id, req, hops + 1, this.opts.peerToken, { silenceMs });
        // Forwarded again (hops > 0): pass the socket id on; the first agent connects to it.
        return hops === 0 ? this.socketIn(res, cfg.region, owner.agent) : res;
      } catch (err) {
        if (bodyRead && (err instanceof NotHereError || err instanceof PeerUnreachableError)) {
          throw new ActorUnavailableError(`actor ${key}: agent ${owner.agent} did not take the call after its streamed request body had begun (${err.message}); a body cannot be sent twice`, { cause: err });
        }
        // Messages reach the worker's stub.fetch(): agent names, never addresses.
        if (err instanceof NotHereError) { last = `agent ${owner.agent}: ${err.message}`; continue; }
        if (err instanceof PeerUnreachableError) { last = `agent ${owner.agent} did not take the call`; continue; }
        if (err instanceof CallOutcomeUnknownError) {
          this.opts.log.warn('forwarded actor call: outcome unknown', { actor: key, owner: owner.agent, error: err });
          throw new CallOutcomeUnknownError(`actor ${key}: the call reached agent ${owner.agent}, which then stopped answering (for over ${owner.ttlMs + SILENCE_MARGIN_MS} ms) or lost the connection; it may or may not have run (outcome unknown)`, { cause: err, context: { actor: key } });
        }
        throw err;
      }
    }
  }
}
