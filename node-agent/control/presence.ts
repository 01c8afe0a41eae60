import type { NatsConnection } from 'nats';
import type { Logger } from '../../common/log.js';
import { encodeJson, SUBJECTS, type AgentReport, type EdgeBuckets, type Presence, type WorkerReport } from '../../common/nats.js';
import { agentKey, parseOrSkip, parseWorkerRef, workerKey } from '../../common/keys.js';
import type { WorkerState } from '../serving/worker-server.js';

// The agent's side of "what is happening": presence (refreshed every ttl/3, so readers
// treat it as gone ttl after the last refresh) and the per-worker report the operator
// folds into EdgeWorker status. The report is rewritten only when it changes.

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
  /** Actors active per DurableActor (actorClassKey). */
  actors?(): Record<string, { active: number }>;
  load?(): { workers: number; inflight: number };
  /** How often the worker states are compared with the last report. */
  reportEveryMs?: number;
  /** An agent's front or one of its isolate hosts says so (common/isolate-hosts.ts). */
  isolateHosts?: Presence['isolateHosts'];
  isolateHost?: Presence['isolateHost'];
}

export class AgentPresence {
  private heartbeat: NodeJS.Timeout | undefined;
  private reporter: NodeJS.Timeout | undefined;
  private lastReport = '';
  private seq = 0;
  private draining = false;
  private readonly startedAt = new Date().toISOString();
  private readonly key: string;
  private writing = Promise.resolve();

  constructor(private readonly opts: PresenceOptions) {
    this.key = agentKey(opts.region, opts.agent);
  }

  async start(): Promise<void> {
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
      ...(this.opts.isolateHosts !== undefined ? { isolateHosts: this.opts.isolateHosts } : {}),
      ...(this.opts.isolateHost ? { isolateHost: this.opts.isolateHost } : {}),
    };
  }

  private beat(): Promise<void> {
    this.writing = this.writing.then(async () => {
      try {
        await this.opts.buckets.agents.put(this.key, encodeJson(this.presence()));
      } catch (err) {
        this.opts.log.warn('presence refresh failed', { key: this.key, error: err });
      }
    });
    return this.writing;
  }

  /** Publishes the per-worker report when it differs from the last one written. */
  report(): Promise<void> {
    this.writing = this.writing.then(async () => {
      const workers: Record<string, WorkerReport> = {};
      for (const s of this.opts.status()) {
        // Served from NATS configs, whose names are DNS labels; a throw here would stall every later write.
        const w = parseOrSkip(parseWorkerRef, s.key);
        if (!w) continue;
        workers[workerKey(w.namespace, w.name)] = s.state === 'ready'
          ? { version: s.digest, state: 'ready' }
          : { version: s.digest, state: 'error', error: s.error, ...(s.servingDigest ? { servingVersion: s.servingDigest } : {}) };
      }
      const actors = this.opts.actors?.() ?? {};
      const body = JSON.stringify([workers, actors]);
      if (body === this.lastReport) return;
      const report: AgentReport = { agent: this.opts.agent, region: this.opts.region, seq: ++this.seq, workers, actors };
      try {
        await this.opts.buckets.reports.put(this.key, encodeJson(report));
        this.opts.nc.publish(SUBJECTS.agentStatus(this.opts.region, this.opts.agent), encodeJson(report));
        this.lastReport = body;
      } catch (err) {
        this.opts.log.warn('worker report failed; will retry', { key: this.key, error: err });
      }
    });
    return this.writing;
  }

  /** Clean shutdown: readers drop this agent at once instead of after the TTL. */
  async stop(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.reporter) clearInterval(this.reporter);
    await this.writing;
    await Promise.allSettled([this.opts.buckets.agents.delete(this.key), this.opts.buckets.reports.delete(this.key)]);
  }
}
