import type { NatsConnection } from 'nats';
import { agentOf } from './isolate-hosts.js';
import { followBucket, type BucketFollower } from './kv-follower.js';
import type { Logger } from './log.js';
import { type AgentReport, type EdgeBuckets, type Presence, type WorkerReport } from './nats.js';
import { AgentReportSchema, decodeJson, PresenceSchema } from './nats-messages.js';

// A view of the agents (presence, and optionally their per-worker reports), rebuilt from
// NATS on every start (the watches replay the buckets), so a restarted operator knows
// exactly what the last one knew. Agents use it too, for the actor hash ring.
//
// Liveness is judged on the local clock, the way client-go's leader election does:
// an agent is live until ttlMs passes with no refresh *seen here*. Entries replayed at
// start count as seen at start, so a restart delays noticing a dead agent by one TTL but
// never declares a live one dead because of clock skew between machines.
//
// Silence is only evidence while this view can hear (issue 13: a NATS restart used to drop
// every agent, itself included, from every ring). The view judges nobody while it is
// deaf: from a disconnect until the re-list after the reconnect has been applied, and,
// for an agent's own view (`self`), while its own presence refreshes do not come back
// through the watch (the watch broke, or this agent cannot write: either way it cannot
// tell a dead agent from one it does not hear). When it hears again every agent it knew
// counts as seen then, so one that died meanwhile is dropped one TTL later. Membership
// only says where an actor should be; who may serve it is the fenced log's to say.

export type ViewChange = { all: true } | { all: false; workers: Set<string>; actors: Set<string> };

interface Live { presence: Presence; lastSeen: number; /** The record as written, to skip parsing an identical refresh. */ raw: Buffer }

export interface AgentViewOptions {
  /** Follow the reports bucket too (default true). */
  reports?: boolean;
  /** The buckets' connection: the view is deaf from a disconnect until the re-list after the reconnect. */
  connection?: Pick<NatsConnection, 'status'>;
  /** This agent's own presence key (agentKey): its refreshes not coming back means the view is deaf. */
  self?: string;
}

export class AgentView {
  private readonly live = new Map<string, Live>();
  /** Why the view cannot judge liveness now ('disconnected', 'own presence unseen'), or undefined. */
  private deaf: string | undefined;
  /** When the presence follower was last asked to re-list because this agent did not hear itself. */
  private lastResync = 0;
  private presenceFollower: BucketFollower | undefined;
  private readonly reports = new Map<string, AgentReport>();
  private followers: BucketFollower[] = [];
  private sweeper: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<(c: ViewChange) => void>();

  constructor(private readonly buckets: EdgeBuckets, private readonly log: Logger, private readonly opts: AgentViewOptions = {}) {}

  onChange(cb: (c: ViewChange) => void): void { this.listeners.add(cb); }

  /** Whether the view can judge liveness now (see the file comment). */
  get hearing(): boolean { return this.deaf === undefined; }

  async start(): Promise<void> {
    const connection = this.opts.connection;
    const follow = (kv: EdgeBuckets['agents'], name: string, put: (key: string, value: Uint8Array) => void, del: (key: string) => void, onListed?: () => void): BucketFollower => {
      const f = followBucket(kv, { put, delete: del }, { log: this.log, name, ...(connection ? { connection } : {}), ...(onListed ? { onListed } : {}) });
      this.followers.push(f);
      return f;
    };
    if (connection) void this.followConnection(connection);
    this.presenceFollower = follow(this.buckets.agents, 'agents', (k, v) => this.applyPresence(k, v), (k) => this.removePresence(k),
      () => { if (this.deaf === 'disconnected') this.hear(); });
    await this.presenceFollower.initial;
    if (this.opts.reports !== false) await follow(this.buckets.reports, 'agent-reports', (k, v) => this.applyReport(k, v), (k) => this.applyReport(k, undefined)).initial;
    this.sweeper = setInterval(() => this.sweep(), 200);
  }

  private async followConnection(nc: Pick<NatsConnection, 'status'>): Promise<void> {
    try {
      for await (const s of nc.status()) {
        // The re-list that follows the reconnect ends it (the follower's onListed).
        if (s.type === 'disconnect' && this.deaf !== 'disconnected') {
          this.deaf = 'disconnected';
          this.log.warn('agent view: NATS disconnected; judging no agent until it is back and re-listed');
        }
      }
    } catch (err) {
      this.log.debug('agent view: NATS status stream ended', { error: err });
    }
  }

  /** The view hears again: every agent it knows counts as seen now. */
  private hear(): void {
    const was = this.deaf;
    this.deaf = undefined;
    const now = Date.now();
    for (const l of this.live.values()) l.lastSeen = Math.max(l.lastSeen, now);
    this.log.info('agent view: hearing again', { was });
  }

  private emit(c: ViewChange): void {
    for (const l of this.listeners) l(c);
  }

  private removePresence(key: string): void {
    if (this.live.delete(key)) this.emit({ all: true });
  }

  private applyPresence(key: string, value: Uint8Array): void {
    try {
      const known = this.live.get(key);
      // Most refreshes repeat the last one byte for byte: seen again, nothing to parse (every
      // process of a region follows every other's, a few times per TTL).
      const raw = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
      if (known?.raw.equals(raw)) {
        known.lastSeen = Date.now();
        if (key === this.opts.self && this.deaf === 'own presence unseen') this.hear();
        return;
      }
      const presence = decodeJson(PresenceSchema, value, `agent presence ${key}`);
      this.live.set(key, { presence, raw: Buffer.from(raw), lastSeen: Date.now() });
      if (key === this.opts.self && this.deaf === 'own presence unseen') this.hear();
      // A restarted isolate host keeps its name but comes back with a new peer port and start time.
      if (!known || known.presence.draining !== presence.draining || known.presence.address !== presence.address
        || known.presence.peerAddress !== presence.peerAddress || known.presence.startedAt !== presence.startedAt) this.emit({ all: true });
    } catch (err) {
      this.log.warn('ignoring unreadable agent presence', { key, error: err });
    }
  }

  /** A report written (`value`) or deleted (undefined). */
  private applyReport(key: string, value: Uint8Array | undefined): void {
    const before = this.reports.get(key);
    let after: AgentReport | undefined;
    if (value !== undefined) {
      try {
        after = decodeJson(AgentReportSchema, value, `agent report ${key}`);
      } catch (err) {
        this.log.warn('ignoring unreadable agent report', { key, error: err });
        return;
      }
      this.reports.set(key, after);
    } else {
      this.reports.delete(key);
    }
    const changed = new Set<string>();
    const changedActors = new Set<string>();
    for (const k of new Set([...Object.keys(before?.workers ?? {}), ...Object.keys(after?.workers ?? {})])) {
      if (JSON.stringify(before?.workers[k]) !== JSON.stringify(after?.workers[k])) changed.add(k);
    }
    for (const k of new Set([...Object.keys(before?.actors ?? {}), ...Object.keys(after?.actors ?? {})])) {
      if (before?.actors[k]?.active !== after?.actors[k]?.active) changedActors.add(k);
    }
    if (changed.size > 0 || changedActors.size > 0) this.emit({ all: false, workers: changed, actors: changedActors });
  }

  private lastSweep = Date.now();

  private sweep(): void {
    const now = Date.now();
    // This process was stopped or its event loop stalled (SIGSTOP, a long GC): refreshes
    // that arrived meanwhile are still queued, so judge nobody on that gap.
    if (now - this.lastSweep > 1000) {
      for (const l of this.live.values()) l.lastSeen = Math.max(l.lastSeen, now);
    }
    this.lastSweep = now;
    // This agent's own refreshes stopped coming back: it is the one not hearing (its watch
    // broke, or it cannot write), not everyone else that died. Ask for a re-list, once a TTL.
    const self = this.opts.self !== undefined ? this.live.get(this.opts.self) : undefined;
    if (self && now - self.lastSeen > self.presence.ttlMs) {
      if (this.deaf === undefined) {
        this.deaf = 'own presence unseen';
        this.log.warn('agent view: this agent does not see its own presence refreshes; judging no agent until it does');
      }
      if (now - this.lastResync > self.presence.ttlMs) {
        this.lastResync = now;
        this.presenceFollower?.resync();
      }
    }
    if (this.deaf !== undefined) return;
    let gone = false;
    for (const [key, l] of this.live) {
      if (now - l.lastSeen > l.presence.ttlMs) {
        this.live.delete(key);
        gone = true;
        this.log.info('agent presence expired', { agent: l.presence.agent, region: l.presence.region });
      }
    }
    if (gone) this.emit({ all: true });
  }

  /** Live agents, by region. */
  agents(region?: string): Presence[] {
    return [...this.live.values()].map((l) => l.presence).filter((p) => region === undefined || p.region === region);
  }

  /**
   * What each live agent of a region says about one worker (workerKey form). An agent with
   * isolate hosts is one entry: the report of whichever of its processes serves the worker
   * (common/isolate-hosts.ts), so readiness counts agents, not processes.
   */
  reportsFor(worker: string, region: string): { agent: string; report: WorkerReport | undefined }[] {
    const byAgent = new Map<string, WorkerReport | undefined>();
    for (const [key, l] of this.live) {
      if (l.presence.region !== region) continue;
      const agent = agentOf(l.presence);
      byAgent.set(agent, byAgent.get(agent) ?? this.reports.get(key)?.workers[worker]);
    }
    return [...byAgent].map(([agent, report]) => ({ agent, report }));
  }

  private readonly staleSince = new Map<string, number>();

  /** Active actor counts of one DurableActor (`<namespace>.<name>`) on the live agents of a region. */
  reportsForActors(actor: string, region: string): { agent: string; active: number }[] {
    const byAgent = new Map<string, number>();
    for (const [key, l] of this.live) {
      if (l.presence.region !== region) continue;
      const agent = agentOf(l.presence);
      byAgent.set(agent, (byAgent.get(agent) ?? 0) + (this.reports.get(key)?.actors[actor]?.active ?? 0));
    }
    return [...byAgent].map(([agent, active]) => ({ agent, active }));
  }

  /** Reports of agents absent for over `graceMs`: the leader deletes them. */
  staleReportKeys(graceMs: number): string[] {
    const now = Date.now();
    const out: string[] = [];
    for (const k of this.reports.keys()) {
      if (this.live.has(k)) { this.staleSince.delete(k); continue; }
      const since = this.staleSince.get(k) ?? now;
      this.staleSince.set(k, since);
      if (now - since > graceMs) out.push(k);
    }
    for (const k of [...this.staleSince.keys()]) if (!this.reports.has(k)) this.staleSince.delete(k);
    return out;
  }

  async stop(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    await Promise.all(this.followers.map((f) => f.stop()));
  }
}

/** What the reconcilers read of the view; common/fake/agent-view.ts is an in-memory one. */
export type AgentReports = Pick<AgentView, 'agents' | 'reportsFor' | 'reportsForActors'>;
