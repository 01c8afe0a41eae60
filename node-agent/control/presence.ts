import { ErrorCode, type NatsConnection } from 'nats';
import type { Logger } from '../../common/log.js';
import { encodeJson, SUBJECTS, type AgentReport, type EdgeBuckets, type Presence, type WorkerReport } from '../../common/nats.js';
import { agentKey, parseOrSkip, parseWorkerRef, workerKey } from '../../common/keys.js';
import type { WorkerState } from '../serving/worker-server.js';

// The agent's side of "what is happening": presence (refreshed every ttl/3, so readers
// treat it as gone ttl after the last refresh) and the per-worker report the operator
// folds into EdgeWorker status. The report is rewritten only when it changes.
//
// After NATS comes back the presence is written again at once (and every RECOVER_RETRY_MS
// until a write lands), not at the next ttl/3 tick, so the region hears this agent within
// one round of NATS being back. A write in flight when the connection drops is given up on
// at once (nats.js would hold it until its 5 s timeout), so it does not delay that.

export interface PresenceOptions {
  nc: NatsConnection;
  buckets: EdgeBuckets;
  agent: string;
  node: string;
  region: string;
  address: string;
  /** Base URL of the peer port (actor calls forwarded by other agents). */
  peerAddress?: string;
  ttlMs: number;
  log: Logger;
  status(): WorkerState[];
  /**
   * Changes whenever status() may say something new (WorkerServer.statusVersion); while it
   * does not, the report's workers part is not rebuilt (10,000 workers: a sort, a map and a
   * 1 MB JSON five times a second per agent). Absent: rebuilt every time.
   */
  statusVersion?(): number;
  /** Actors active per DurableActor (actorClassKey). */
  actors?(): Record<string, { active: number }>;
  load?(): { workers: number; inflight: number };
  /** The busy workers' smoothed in-flight requests here (shards grow with them: docs/shards.md). */
  shardLoad?(): Record<string, number>;
  /** How often the worker states are compared with the last report. */
  reportEveryMs?: number;
  /** An agent's front or one of its isolate hosts says so (common/isolate-hosts.ts). */
  isolateHosts?: Presence['isolateHosts'];
  isolateHost?: Presence['isolateHost'];
}

/** After a reconnect, a presence write that fails is tried again this soon. */
const RECOVER_RETRY_MS = 250;

export class AgentPresence {
  private connected = true;
  /** Ends (resolves) the writes in flight: the connection dropped. */
  private readonly inflight = new Set<() => void>();
  private recoverTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** performance.now() when the last acknowledged refresh was sent. */
  private confirmedSentAt: number | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private reporter: NodeJS.Timeout | undefined;
  private lastReport = '';
  /** The report's workers part as last built, and the statusVersion it was built at. */
  private workersPart: { version: number | undefined; workers: Record<string, WorkerReport>; json: string } | undefined;
  /** A report the server refused as over its max_payload: not sent again until it changes. */
  private tooBig = '';
  private seq = 0;
  private draining = false;
  private readonly startedAt = new Date().toISOString();
  private readonly key: string;
  private writing = Promise.resolve();

  constructor(private readonly opts: PresenceOptions) {
    this.key = agentKey(opts.region, opts.agent);
  }

  async start(): Promise<void> {
    void this.followConnection();
    await this.beat();
    await this.report();
    this.heartbeat = setInterval(() => { void this.beat(); }, Math.max(50, Math.floor(this.opts.ttlMs / 3)));
    this.reporter = setInterval(() => { void this.report(); }, this.opts.reportEveryMs ?? 200);
  }

  /** Marks the agent as draining in its presence (it keeps serving what it has). */
  async drain(): Promise<void> {
    this.draining = true;
    await this.beat();
  }

  private presence(): Presence {
    return {
      agent: this.opts.agent, node: this.opts.node, region: this.opts.region, address: this.opts.address,
      ...(this.opts.peerAddress ? { peerAddress: this.opts.peerAddress } : {}),
      ttlMs: this.opts.ttlMs, startedAt: this.startedAt, draining: this.draining, load: this.opts.load?.(),
      ...(this.opts.shardLoad ? { shardLoad: this.opts.shardLoad() } : {}),
      ...(this.opts.isolateHosts !== undefined ? { isolateHosts: this.opts.isolateHosts } : {}),
      ...(this.opts.isolateHost ? { isolateHost: this.opts.isolateHost } : {}),
    };
  }

  /**
   * The seam for an owner's lease (issue 13): on this process's monotonic clock
   * (performance.now()), the time until which no agent of the region can have dropped this
   * one from its ring for silence: the last acknowledged refresh was sent at T, readers saw
   * it no earlier and keep an agent ttlMs past what they last saw. undefined before the
   * first refresh landed. Other reasons to move an actor (an agent joining, a drain) are
   * not covered: the fenced log is.
   */
  heardUntil(): number | undefined {
    return this.confirmedSentAt === undefined ? undefined : this.confirmedSentAt + this.opts.ttlMs;
  }

  private async followConnection(): Promise<void> {
    try {
      for await (const s of this.opts.nc.status()) {
        if (this.stopped) return;
        if (s.type === 'disconnect') {
          this.connected = false;
          for (const end of [...this.inflight]) end();
        } else if (s.type === 'reconnect') {
          this.connected = true;
          this.opts.log.info('NATS reconnected: refreshing presence now');
          void this.recover();
        }
      }
    } catch (err) {
      this.opts.log.debug('presence: NATS status stream ended', { error: err });
    }
  }

  /** Writes the presence now, and again every RECOVER_RETRY_MS until one lands (JetStream may lag the reconnect). */
  private async recover(): Promise<void> {
    if (this.recoverTimer) clearTimeout(this.recoverTimer);
    this.recoverTimer = undefined;
    if (this.stopped || !this.connected) return;
    if (await this.beat()) { void this.report(); return; }
    this.recoverTimer = setTimeout(() => { void this.recover(); }, RECOVER_RETRY_MS);
  }

  /** Whether `write` landed (it throws what it throws), or false once the connection dropped under it. */
  private async unlessDropped(write: Promise<unknown>): Promise<boolean> {
    let end!: () => void;
    const dropped = new Promise<'dropped'>((resolve) => { end = () => resolve('dropped'); });
    this.inflight.add(end);
    try {
      if (await Promise.race([write, dropped]) !== 'dropped') return true;
      write.catch(() => undefined);
      return false;
    } finally {
      this.inflight.delete(end);
    }
  }

  /** One presence write, after those queued; resolves with whether it landed. */
  private beat(): Promise<boolean> {
    const done = this.writing.then(async () => {
      // Disconnected: nothing to wait for; the reconnect writes at once.
      if (!this.connected) return false;
      const sentAt = performance.now();
      try {
        if (!await this.unlessDropped(this.opts.buckets.agents.put(this.key, encodeJson(this.presence())))) return false;
        this.confirmedSentAt = sentAt;
        return true;
      } catch (err) {
        this.opts.log.warn('presence refresh failed', { key: this.key, error: err });
        return false;
      }
    });
    this.writing = done.then(() => undefined);
    return done;
  }

  /** Publishes the per-worker report when it differs from the last one written. */
  report(): Promise<void> {
    this.writing = this.writing.then(async () => {
      const version = this.opts.statusVersion?.();
      if (version === undefined || version !== this.workersPart?.version) {
        const workers: Record<string, WorkerReport> = {};
        for (const s of this.opts.status()) {
          // Served from NATS configs, whose names are DNS labels; a throw here would stall every later write.
          const w = parseOrSkip(parseWorkerRef, s.key);
          if (!w) continue;
          workers[workerKey(w.namespace, w.name)] = s.state === 'ready'
            ? { version: s.digest, state: 'ready', ...(s.shardMember !== undefined ? { shardMember: s.shardMember } : {}) }
            : { version: s.digest, state: 'error', error: s.error, ...(s.servingDigest ? { servingVersion: s.servingDigest } : {}) };
        }
        this.workersPart = { version, workers, json: JSON.stringify(workers) };
      }
      const { workers } = this.workersPart;
      const actors = this.opts.actors?.() ?? {};
      const body = `${this.workersPart.json}\n${JSON.stringify(actors)}`;
      if (body === this.lastReport || body === this.tooBig) return;
      const report: AgentReport = { agent: this.opts.agent, region: this.opts.region, seq: ++this.seq, workers, actors };
      if (!this.connected) return;
      try {
        if (!await this.unlessDropped(this.opts.buckets.reports.put(this.key, encodeJson(report)))) return;
        this.opts.nc.publish(SUBJECTS.agentStatus(this.opts.region, this.opts.agent), encodeJson(report));
        this.lastReport = body;
      } catch (err) {
        if ((err as { code?: string }).code === ErrorCode.MaxPayloadExceeded) {
          // Retrying the same report cannot help (thousands of workers on one agent: issue 17's
          // bench); it is tried again once it changes.
          this.tooBig = body;
          this.opts.log.error('worker report is over the NATS server\'s max_payload; the operator does not see this agent\'s workers until it shrinks', { key: this.key, bytes: encodeJson(report).length, workers: Object.keys(workers).length });
          return;
        }
        this.opts.log.warn('worker report failed; will retry', { key: this.key, error: err });
      }
    });
    return this.writing;
  }

  /** Clean shutdown: readers drop this agent at once instead of after the TTL. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.recoverTimer) clearTimeout(this.recoverTimer);
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.reporter) clearInterval(this.reporter);
    await this.writing;
    await Promise.allSettled([this.opts.buckets.agents.delete(this.key), this.opts.buckets.reports.delete(this.key)]);
  }
}
