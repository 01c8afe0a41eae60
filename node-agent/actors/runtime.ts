import type { NatsConnection, Subscription } from 'nats';
import * as z from 'zod';
import type { AgentView } from '../../common/agent-view.js';
import { followBucket, type BucketFollower } from '../../common/kv-follower.js';
import { untilNats, type Startup } from '../../common/nats-startup.js';
import type { Logger } from '../../common/log.js';
import { encodeJson, SUBJECTS, type ActorConfig, type EdgeBuckets } from '../../common/nats.js';
import { ActorConfigSchema, decodeJson } from '../../common/nats-messages.js';
import { ActorAlarms } from './alarms.js';
import type { ActorRouter as IsolateActorRouter } from '../bindings/actor-binding.js';
import { ActorHost } from './host.js';
import { ActorIsolate } from './isolate.js';
import { ActorLog } from '../../common/actor-log.js';
import {
  actorClassPrefix, actorClassRef, actorInstanceKey, parseActorClassKey, parseActorInstanceKey, parseOrSkip, workerRef,
} from '../../common/keys.js';
import { ActorDeactivationReasons as Why } from '../../common/reasons.js';
import { ActorRing } from './ring.js';
import { Hibernation, HIBERNATE_IDLE_MS } from './hibernation.js';
import { ActorRouter, ActorUnavailableError } from './router.js';
import { ActorStorage } from '../bindings/actor-storage.js';
import { SqlActorStorage, type SqlStorageOptions } from '../bindings/sql-storage.js';
import type { IsolatePool } from '../isolate/pool.js';
import type { SocketRegistry } from '../sockets/sockets.js';
import type { IsolateHooks, WorkerDefinition } from '../isolate/worker-isolate.js';
import type { ServiceRouter } from '../bindings/service-binding.js';
import type { LoaderRouter } from '../bindings/worker-loader.js';

// Everything an agent needs to host DurableActors, wired together: the DurableActor
// configs (KV `edge-actors`), the ring of its region, the actor host on the durable log,
// the router workers' stubs go through, alarms, and migration on drain.

export interface ActorRuntimeOptions {
  agent: string;
  region: string;
  nc: NatsConnection;
  buckets: EdgeBuckets;
  view: AgentView;
  log: Logger;
  pool: IsolatePool;
  /** The agent's isolate hooks (logs, disposals, sockets); actors get their own bindings. */
  hooks: Omit<IsolateHooks, 'bindings'>;
  /** Where actors' env.<service binding> calls go (the agent's worker server). */
  serviceRouter?: ServiceRouter;
  /** Where the actors' env.<worker loader> runs dynamic workers. */
  loaderRouter?: LoaderRouter;
  /** The agent's WebSockets (actors accept sockets; some are carried to other agents). */
  sockets: SocketRegistry;
  /** The served version of a worker (its workerRef), if this agent serves it. */
  workerDefinition(key: string): WorkerDefinition | undefined;
  peerToken?: string;
  /** The agent's egress allowances, for actor isolates' fetch() as for workers'. */
  egressAllow?: readonly string[];
  /** JetStream replicas of the actor log stream, when this agent is the one creating it. */
  logReplicas?: number;
  onActiveChange?(): void;
  /** The namespaces whose DurableActors this process hosts (an isolate host's share); default all. */
  serves?(namespace: string): boolean;
  /** Start-up's state for /readyz: opening the actor log waits for NATS and says so there. */
  startup?: Startup;
  /** SQLite-backed actors' snapshot thresholds (tests lower them). */
  sql?: Pick<SqlStorageOptions, 'snapshotLogBytes' | 'snapshotLogEntries'>;
  /** How long an actor holding only hibernatable WebSockets stays in memory without events (default HIBERNATE_IDLE_MS). */
  hibernateIdleMs?: number;
}

const MigrationSchema = z.object({ from: z.string(), actors: z.array(z.object({ namespace: z.string(), actor: z.string(), id: z.string() })) });

export class ActorRuntime {
  readonly ring: ActorRing;
  host!: ActorHost;
  router!: ActorRouter;
  /** Hibernatable WebSockets of the actors this agent hosts. */
  hibernation!: Hibernation;
  private alarms!: ActorAlarms;
  private readonly configs = new Map<string, ActorConfig>();
  /**
   * Every DurableActor of the region, hosted here or not: what this process's own workers
   * call through. The cordon host hosts no actors, yet the workers it runs call theirs.
   */
  private readonly known = new Map<string, ActorConfig>();
  private follower: BucketFollower | undefined;
  private migrations: Subscription | undefined;
  /** Worker version each active actor was started from: a new version restarts the actor. */
  private readonly versions = new Map<string, string>();

  constructor(private readonly opts: ActorRuntimeOptions) {
    this.ring = new ActorRing(opts.view);
  }

  config(namespace: string, actor: string): ActorConfig | undefined {
    return this.configs.get(actorClassRef(namespace, actor));
  }

  /** What workers' isolates call for `env.<binding>.get(id).fetch()`. */
  get isolateRouter(): IsolateActorRouter {
    return { fetch: (target, id, req) => this.router.fetch(target, id, req) };
  }

  async start(): Promise<void> {
    const { opts } = this;
    const durable = await untilNats('opening the actor log', () => ActorLog.open({ nc: opts.nc, log: opts.log, replicas: opts.logReplicas ?? 1 }), { log: opts.log, ...(opts.startup ? { startup: opts.startup } : {}) });
    this.hibernation = new Hibernation({
      log: opts.log,
      registry: opts.sockets,
      isActive: (key) => this.host.isActive(key),
      run: (cfg, id, event, name) => this.host.socketEvent(cfg, id, async (inst) => {
        if (!inst.hibernationEvent) throw new Error('this actor instance cannot run WebSocket events');
        await inst.hibernationEvent(event);
      }, name),
    });
    this.host = new ActorHost({
      agent: opts.agent,
      log: opts.log,
      durable,
      hibernation: { holds: (key) => this.hibernation.holds(key), idleMs: opts.hibernateIdleMs ?? HIBERNATE_IDLE_MS },
      onActiveChange: () => opts.onActiveChange?.(),
      onAlarmSet: (cfg, id, time, name) => this.alarms.record(cfg, id, time, name),
      knownName: (cfg, id) => this.alarms?.nameOf(cfg, id),
      factory: {
        storage: (state, cfg) => cfg.storageBackend === 'sqlite'
          // A statement's log entry must fit in one commit (NATS max_payload), with room for the request's others.
          ? new SqlActorStorage(state, { maxBytes: cfg.maxBytesPerActor, actor: actorClassRef(cfg.namespace, cfg.name), maxEntryBytes: Math.floor(durable.maxCommitBytes * 0.9), ...opts.sql })
          : new ActorStorage(state, { maxBytes: cfg.maxBytesPerActor, actor: actorClassRef(cfg.namespace, cfg.name) }),
        instance: async (cfg, id, storage, name) => {
          const worker = opts.workerDefinition(workerRef(cfg.namespace, cfg.worker));
          if (!worker) throw new ActorUnavailableError(`DurableActor ${cfg.namespace}/${cfg.name}: its EdgeWorker ${cfg.worker} is not served on agent ${opts.agent}`);
          const warm = opts.pool.take(worker.limits.memoryMiB);
          const inst = await ActorIsolate.activate(
            { worker, className: cfg.className, actor: actorClassRef(cfg.namespace, cfg.name), sqlite: cfg.storageBackend === 'sqlite' },
            { id, storage: storage as ActorStorage, ...(name !== undefined ? { name } : {}) },
            warm, {
              ...opts.hooks, actorRouter: this.isolateRouter, ...(opts.egressAllow ? { egressAllow: opts.egressAllow } : {}),
              ...(opts.serviceRouter ? { serviceRouter: opts.serviceRouter } : {}),
              ...(opts.loaderRouter ? { loaderRouter: opts.loaderRouter } : {}),
              hibernation: this.hibernation.callsFor(cfg, id, worker.digest, name),
            },
          );
          // The database in the isolate holds writes the host just dropped: it must not serve again.
          if (storage instanceof SqlActorStorage) storage.onDiverged = () => inst.dispose(Why.Reset);
          const key = actorInstanceKey(cfg.namespace, cfg.name, id);
          this.versions.set(key, worker.digest);
          // Socket messages run through the actor's input gate like requests, and what
          // their handlers write is committed the same way.
          inst.isolate.setSocketOwner({
            socketEvent: (iso, socketId, event) => {
              this.host.withActor(key, () => iso.deliver(socketId, event)).catch((err: unknown) => {
                opts.log.warn('actor socket event failed', { actor: key, error: err });
              });
            },
          });
          return inst;
        },
      },
    });
    this.router = new ActorRouter({
      agent: opts.agent, ring: this.ring, host: this.host, log: opts.log, peerToken: opts.peerToken, nc: opts.nc, sockets: opts.sockets,
      hibernation: { describe: (s) => this.hibernation.describe(s), adopt: (cfg, id, m) => this.hibernation.adopt(cfg, id, m) },
      config: (ns, actor) => this.config(ns, actor),
      callerConfig: (ns, actor) => this.known.get(actorClassRef(ns, actor)),
    });
    this.alarms = new ActorAlarms({
      agent: opts.agent, index: opts.buckets.alarms, ring: this.ring, host: this.host, log: opts.log,
      config: (ns, actor) => this.config(ns, actor),
    });

    this.follower = followBucket(opts.buckets.actors, {
      put: (key, value) => this.applyConfig(key, value),
      delete: (key) => this.removeConfig(key),
    }, { log: opts.log, name: 'actors', connection: opts.nc });
    await this.follower.initial;
    await this.alarms.start();

    // Ring changes: actors that now belong elsewhere are handed over once idle.
    this.ring.onChange(() => {
      for (const key of this.host.keys()) {
        const a = parseActorInstanceKey(key);
        const cfg = this.config(a.namespace, a.actor);
        if (!cfg || this.ring.owner(cfg.region, key)?.agent !== opts.agent) void this.host.handOver(key, Why.RingChange);
      }
    });
    // Another agent drained: activate at once the actors that come to us.
    this.migrations = opts.nc.subscribe(SUBJECTS.actorMigrate(opts.region), {
      callback: (_err, msg) => {
        try {
          const m = decodeJson(MigrationSchema, msg.data, 'actor migration');
          if (m.from === opts.agent) return;
          for (const a of m.actors) void this.prewarm(a.namespace, a.actor, a.id);
        } catch (err) {
          opts.log.warn('ignoring bad migration event', { error: err });
        }
      },
    });
  }

  private removeConfig(kvKey: string): void {
    // A key of another shape never held a config this agent could have taken.
    const gone = parseOrSkip(parseActorClassKey, kvKey);
    if (!gone) return;
    this.configs.delete(actorClassRef(gone.namespace, gone.name));
    this.known.delete(actorClassRef(gone.namespace, gone.name));
    this.hibernation?.closeAll(1001, 'the Durable Object was deleted', (cfg) => cfg.namespace === gone.namespace && cfg.name === gone.name);
    const prefix = actorClassPrefix(gone.namespace, gone.name);
    for (const k of this.host.keys()) if (k.startsWith(prefix)) void this.host.handOver(k, Why.Deleted);
  }

  private applyConfig(kvKey: string, value: Uint8Array): void {
    try {
      const cfg = decodeJson(ActorConfigSchema, value, `actor config ${kvKey}`);
      this.known.set(actorClassRef(cfg.namespace, cfg.name), cfg);
      // Another isolate host of this agent hosts it: calls for it are answered 421 (not here).
      if (this.opts.serves && !this.opts.serves(cfg.namespace)) return;
      this.configs.set(actorClassRef(cfg.namespace, cfg.name), cfg);
    } catch (err) {
      this.opts.log.warn('ignoring unreadable actor config', { key: kvKey, error: err });
    }
  }

  /** A worker's version changed (`ref` a workerRef): actors running its old code restart on the next call. */
  workerChanged(ref: string): void {
    // Cloudflare disconnects every WebSocket of a Durable Object on a code update.
    const now = this.opts.workerDefinition(ref)?.digest;
    this.hibernation?.closeAll(1012, 'the worker was updated', (cfg, digest) => workerRef(cfg.namespace, cfg.worker) === ref && digest !== now);
    for (const key of this.host.keys()) {
      const a = parseActorInstanceKey(key);
      const cfg = this.config(a.namespace, a.actor);
      if (!cfg || workerRef(cfg.namespace, cfg.worker) !== ref) continue;
      const def = this.opts.workerDefinition(ref);
      if (!def || this.versions.get(key) !== def.digest) void this.host.handOver(key, Why.NewVersion);
    }
  }

  private async prewarm(namespace: string, actor: string, id: string): Promise<void> {
    const cfg = this.config(namespace, actor);
    const key = actorInstanceKey(namespace, actor, id);
    if (!cfg || this.ring.owner(cfg.region, key)?.agent !== this.opts.agent) return;
    try {
      await this.host.prewarm(cfg, id);
    } catch (err) {
      this.opts.log.debug('prewarm after migration failed; the next call activates it', { actor: key, error: err });
    }
  }

  /**
   * SIGTERM: the agent already says it is draining (so the rings of the region no longer
   * include it); finish in-flight calls, release every actor, and tell the region which
   * actors moved so their new owners activate them at once.
   */
  async drain(): Promise<number> {
    const keys = await this.host.drain();
    // Sockets of clients on other agents move with their actors (those agents re-create
    // them on the next owners); the others' clients are on this agent and reconnect.
    this.hibernation?.drain();
    if (keys.length > 0) {
      const actors = keys.map(parseActorInstanceKey);
      this.opts.nc.publish(SUBJECTS.actorMigrate(this.opts.region), encodeJson({ from: this.opts.agent, actors }));
      await this.opts.nc.flush();
    }
    return keys.length;
  }

  async stop(): Promise<void> {
    this.migrations?.unsubscribe();
    await this.follower?.stop();
    await this.alarms?.stop();
    this.hibernation?.closeAll(1001, 'the edge agent is shutting down');
    await this.host?.stop();
  }
}
