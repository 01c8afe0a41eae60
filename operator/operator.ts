import type { Server } from 'node:http';
import { agentOf } from '../common/isolate-hosts.js';
import type { KubeConfig } from '@kubernetes/client-node';
import type { NatsConnection } from 'nats';
import {
  DurableActorSchema, EDGE_MODEL, EDGE_POLICY, EdgeModelSchema, EdgePolicySchema, EdgeWorkerSchema, GROUP, VERSION,
  type DurableActor, type EdgeModel, type EdgePolicy, type EdgeWorker,
} from '../common/api/index.js';
import { startAdminServer, type AdminPath } from '../common/admin-server.js';
import { MANAGED_BY, MANAGED_BY_LABEL, WORKER_LABEL, WORKER_NAMESPACE_LABEL } from '../common/labels.js';
import type { Logger } from '../common/log.js';
import { followBucket } from '../common/kv-follower.js';
import type { EdgeBuckets } from '../common/nats.js';
import { connectNatsWaiting, NatsStartupStoppedError, Startup, untilNats } from '../common/nats-startup.js';
import { natsClientOptions, type NatsClientAuth } from '../common/nats-auth.js';
import { provisionNats } from '../common/nats-provision.js';
import type { SecretSealer } from '../common/sealing.js';
import {
  parseActorClassKey, parseOrSkip, parseWorkerKey,
} from '../common/keys.js';
import { ConditionTypes } from '../common/reasons.js';
import { AgentView } from '../common/agent-view.js';
import { ActorLog } from '../common/actor-log.js';
import { disposeBundleChecker } from './controllers/bundle-check.js';
import { DA_PLURAL, DurableActorReconciler } from './controllers/durableactor.js';
import { EdgeWorkerReconciler, PLURAL } from './controllers/edgeworker.js';
import { EventRecorder } from './runtime/events.js';
import { Informer, type KubeObject } from './runtime/informer.js';
import { KubeClient } from './runtime/kube-client.js';
import { LeaderElector } from './runtime/leader-election.js';
import { OperatorMetrics } from './runtime/metrics.js';
import type { NodeInfo } from './controllers/placement.js';
import { RefWatcher, hasSecretRefs } from './controllers/ref-watcher.js';
import { routeNeighbours } from './controllers/routes.js';
import { WorkerStore } from './controllers/worker-store.js';
import type { WorkQueueMetricsEvent } from './runtime/workqueue.js';
import { Controller, objectKeyOf, type ObjectKey } from './runtime/controller.js';
import { clusterInference } from './controllers/inference.js';

// `edge operator`: leader election first; only the leader starts the informers, the work
// queue and the reconcilers. Everything it knows at start it reads back from the
// apiserver and NATS, so a restart anywhere converges to the same state.

export const DEFAULT_AI_IMAGE = 'vllm/vllm-openai:v0.11.0';

export interface OperatorOptions {
  kc: KubeConfig;
  natsUrl: string;
  /** Credentials (role operator) and the server's CA; none for a server without auth. */
  natsAuth?: Omit<NatsClientAuth, 'role'>;
  /** Seals Secret values before they go to NATS (the agents hold the same key). */
  sealer: SecretSealer;
  /** JetStream replicas of what the operator creates (the actor stream, the KV buckets, the bundle store). */
  actorLogReplicas?: number;
  identity: string;
  log: Logger;
  leaseNamespace: string;
  /**
   * Elect one acting replica with a Lease (default true). false: act at once, as the only
   * replica (controller-runtime's --leader-elect=false); two such replicas fight.
   */
  leaderElection?: boolean;
  leaseName?: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  defaultAiImage?: string;
  /**
   * The namespace every model server (Deployment, Service) is created in; its RBAC is the
   * only write access to workloads the operator needs. Unset: each worker's namespace.
   */
  modelNamespace?: string;
  /** Reconciles each controller runs at once (always for different objects). */
  concurrency?: number;
  /** Everything is reconciled again this often, whatever the events said. */
  resyncMs?: number;
  /** Workers binding Secrets are reconciled this often (Secrets are read, never watched). Default 30 s. */
  secretPollMs?: number;
  /** Called when leadership is lost; the CLI exits so a fresh process starts clean. */
  onLostLeadership?: () => void;
}

/** One admin listener: where, and what it serves (all of /metrics, the probes and /status by default). */
export interface AdminListen { host: string; port: number; serve?: readonly AdminPath[] }

interface NodeObject extends KubeObject { metadata: KubeObject['metadata'] & { labels?: Record<string, string> }; spec?: { unschedulable?: boolean } }

interface Lifecycle { metadata: { generation?: number; deletionTimestamp?: string; finalizers?: string[] } }
/** Our own status writes come back as updates; only a spec or lifecycle change needs work. */
const specOrLifecycleChanged = (obj: Lifecycle, old?: Lifecycle) => !old
  || old.metadata.generation !== obj.metadata.generation || old.metadata.deletionTimestamp !== obj.metadata.deletionTimestamp
  || JSON.stringify(old.metadata.finalizers) !== JSON.stringify(obj.metadata.finalizers);
const labelsChanged = (n: KubeObject, old?: KubeObject) => !old || JSON.stringify(old.metadata.labels) !== JSON.stringify(n.metadata.labels);

export class Operator {
  readonly metrics: OperatorMetrics;
  private readonly client: KubeClient;
  private nc: NatsConnection | undefined;
  private buckets: EdgeBuckets | undefined;
  private elector: LeaderElector | undefined;
  private readonly admins: Server[] = [];
  private leadingWithoutElection = false;
  private leading: Promise<void> | undefined;
  private stopping = false;
  private readonly cleanups: (() => Promise<void> | void)[] = [];
  private synced = false;
  private readonly startup = new Startup();
  private controllers: { queueLength: number }[] = [];

  constructor(private readonly opts: OperatorOptions) {
    this.metrics = new OperatorMetrics();
    this.client = new KubeClient(opts.kc);
  }

  get isLeader(): boolean { return this.elector?.isLeader ?? this.leadingWithoutElection; }
  /** Leader with every cache synced and the first full reconcile queued. */
  get isActive(): boolean { return this.isLeader && this.synced; }

  /** Starts the admin listeners (their bound ports, in order), then NATS, then the Lease. */
  async start(listen: readonly AdminListen[] = [{ host: '127.0.0.1', port: 0 }]): Promise<number[]> {
    // The admin ports first: /readyz says what start-up waits for (NATS away is waited for, never an exit).
    const ports: number[] = [];
    for (const l of listen) ports.push(await this.startAdmin(l));
    const waiting = { log: this.opts.log, startup: this.startup, stopped: () => this.stopping };
    const nc = await connectNatsWaiting(this.opts.natsUrl, `edge-operator ${this.opts.identity}`, natsClientOptions({ role: 'operator', ...this.opts.natsAuth }), waiting);
    this.nc = nc;
    if (this.stopping) throw new NatsStartupStoppedError('operator stopped during start-up');
    // Agents may not create streams: whichever operator starts first creates them.
    this.buckets = await untilNats('creating the NATS streams', () => provisionNats(nc, { log: this.opts.log, actorLogReplicas: this.opts.actorLogReplicas, kvReplicas: this.opts.actorLogReplicas }), waiting);
    this.startup.done();
    if (this.opts.leaderElection === false) {
      this.opts.log.warn('leader election off (--leader-elect=false): acting now; run no other replica');
      this.leadingWithoutElection = true;
      this.metrics.leader.set(1);
      this.leading = this.lead().catch((err: unknown) => {
        this.opts.log.error('controllers failed to start', { error: err });
        this.opts.onLostLeadership?.();
      });
      return ports;
    }
    this.elector = new LeaderElector({
      kc: this.opts.kc,
      namespace: this.opts.leaseNamespace,
      name: this.opts.leaseName ?? 'edge-isolates-operator',
      identity: this.opts.identity,
      leaseDurationMs: this.opts.leaseDurationMs ?? 15_000,
      renewDeadlineMs: this.opts.renewDeadlineMs ?? 10_000,
      retryPeriodMs: this.opts.retryPeriodMs ?? 2_000,
      log: this.opts.log.child({ component: 'leader-election' }),
      onStartedLeading: () => {
        this.metrics.leader.set(1);
        this.leading = this.lead().catch((err: unknown) => {
          this.opts.log.error('controllers failed to start', { error: err });
          this.opts.onLostLeadership?.();
        });
      },
      onStoppedLeading: () => {
        this.metrics.leader.set(0);
        if (this.stopping) return;
        this.opts.log.error('lost leadership; stopping', { identity: this.opts.identity });
        this.opts.onLostLeadership?.();
      },
      onNewLeader: (leader: string) => this.opts.log.info('leader', { leader, me: leader === this.opts.identity }),
    });
    await this.elector.start();
    return ports;
  }

  private async lead(): Promise<void> {
    const { kc, log } = this.opts;
    const buckets = this.buckets!;
    const workers = new Informer<EdgeWorker>({
      kc, path: `/apis/${GROUP}/${VERSION}/${PLURAL}`, log, name: 'edgeworkers',
      parse: (raw) => EdgeWorkerSchema.parse(raw),
    });
    const actors = new Informer<DurableActor>({
      kc, path: `/apis/${GROUP}/${VERSION}/${DA_PLURAL}`, log, name: 'durableactors',
      parse: (raw) => DurableActorSchema.parse(raw),
    });
    const nodes = new Informer<NodeObject>({ kc, path: '/api/v1/nodes', log, name: 'nodes' });
    // The cluster admin's kinds (cluster-scoped).
    const policies = new Informer<EdgePolicy>({
      kc, path: `/apis/${GROUP}/${VERSION}/${EDGE_POLICY.plural}`, log, name: 'edgepolicies',
      parse: (raw) => EdgePolicySchema.parse(raw),
    });
    const models = new Informer<EdgeModel>({
      kc, path: `/apis/${GROUP}/${VERSION}/${EDGE_MODEL.plural}`, log, name: 'edgemodels',
      parse: (raw) => EdgeModelSchema.parse(raw),
    });
    const modelNs = this.opts.modelNamespace;
    const deployments = new Informer<KubeObject>({
      kc, path: modelNs ? `/apis/apps/v1/namespaces/${modelNs}/deployments` : '/apis/apps/v1/deployments', log, name: 'inference-deployments',
      labelSelector: `${MANAGED_BY_LABEL}=${MANAGED_BY}`,
    });
    const agents = new AgentView(buckets, log, { connection: this.nc! });
    // Set once the controllers exist: a foreign change to a config re-queues its EdgeWorker.
    let onForeignWorker: (key: string) => void = () => {};
    const store = new WorkerStore(buckets, log, (key) => onForeignWorker(key));
    const events = new EventRecorder(this.client, this.opts.identity, log);
    let actorLog: Promise<ActorLog> | undefined;
    const nodeInfos = (): NodeInfo[] => nodes.list().map((n) => ({ name: n.metadata.name, labels: n.metadata.labels ?? {}, unschedulable: n.spec?.unschedulable }));

    const controllers = {
      ew: new Controller<EdgeWorker>({
        name: 'edgeworker', log, concurrency: this.opts.concurrency ?? 4, onMetrics: (e) => this.observeQueue(e),
        reconciler: new EdgeWorkerReconciler({
          client: this.client, agents, events, store, inference: clusterInference(kc, modelNs),
          getWorker: (ns, name) => workers.get(ns, name),
          getActor: (ns, name) => actors.get(ns, name),
          listWorkers: () => workers.list(),
          policies: () => policies.list(),
          models: () => models.list(),
          nodes: nodeInfos,
          defaultAiImage: this.opts.defaultAiImage ?? DEFAULT_AI_IMAGE,
          sealer: this.opts.sealer,
        }),
      }),
      da: new Controller<DurableActor>({
        name: 'durableactor', log, concurrency: this.opts.concurrency ?? 4, onMetrics: (e) => this.observeQueue(e),
        reconciler: new DurableActorReconciler({
          client: this.client, events, actorConfigs: buckets.actors, agents,
          purgeActorData: async (ns, name) => {
            actorLog ??= ActorLog.open({ nc: this.nc!, log });
            await (await actorLog).purgeNamespace(ns, name);
          },
          getActor: (ns, name) => actors.get(ns, name),
          getWorker: (ns, name) => workers.get(ns, name),
          nodes: nodeInfos,
        }),
      }),
    };
    this.controllers = Object.values(controllers);
    this.metrics.setControllers(Object.values(controllers));
    const { ew, da } = controllers;
    const refs = new RefWatcher(kc, log, (key) => ew.enqueue(key));
    // Placement follows Node labels: a change re-queues everything (once the caches are whole).
    const allOnNodeChange = <T extends KubeObject>(c: Controller<T>, list: () => T[]) =>
      c.watch(nodes, () => (this.synced ? list().map(objectKeyOf) : []), labelsChanged);

    ew.watchFor(workers, specOrLifecycleChanged)
      // Workers binding this class resolve its uid.
      .watch(actors, (a) => workers.list(a.metadata.namespace ?? 'default')
        .filter((w) => (w.spec.bindings?.actors ?? []).some((b) => b.actor === a.metadata.name))
        .map(objectKeyOf), specOrLifecycleChanged)
      .watch(deployments, (d) => {
        const labels = d.metadata.labels as Record<string, string> | undefined;
        const worker = labels?.[WORKER_LABEL];
        const ns = modelNs ? labels?.[WORKER_NAMESPACE_LABEL] : d.metadata.namespace;
        return worker && ns ? [{ namespace: ns, name: worker }] : [];
      });
    allOnNodeChange(ew, () => workers.list());
    const synced = (keys: () => ObjectKey[]) => (this.synced ? keys() : []);
    // A policy may govern any namespace (a "*" one, or the one a named policy stops governing).
    ew.watch(policies, () => synced(() => workers.list().map(objectKeyOf)), specOrLifecycleChanged)
      .watch(models, () => synced(() => workers.list().filter((w) => (w.spec.bindings?.ai ?? []).length > 0).map(objectKeyOf)), specOrLifecycleChanged)
      // Routes and GPUs are decided across workers: a change of one (its deletion included)
      // moves the decision of the others claiming an overlapping host, and of the workers of
      // its namespace sharing the GPU quota.
      .watch(workers, (w, old) => synced(() => [
        ...routeNeighbours(w, old, workers.list()),
        ...((w.spec.bindings?.ai ?? []).length > 0 || (old?.spec.bindings?.ai ?? []).length > 0
          ? workers.list(w.metadata.namespace ?? 'default').filter((x) => (x.spec.bindings?.ai ?? []).length > 0 && x.metadata.name !== w.metadata.name)
          : []),
      ].map(objectKeyOf)), specOrLifecycleChanged);
    // DurableActors follow their worker's readiness, so any change of it counts, status included.
    da.watchFor(actors, specOrLifecycleChanged)
      .watch(workers, (w) => actors.list(w.metadata.namespace ?? 'default')
        .filter((a) => a.spec.workerRef.name === w.metadata.name)
        .map(objectKeyOf));
    allOnNodeChange(da, () => actors.list());
    for (const event of ['add', 'update', 'delete'] as const) {
      workers.on(event, (w, old) => { if (specOrLifecycleChanged(w, old)) refs.update(workers.list()); });
    }
    agents.onChange((c) => {
      if (!this.synced) return;
      if (c.all) { ew.enqueueAll(); da.enqueueAll(); return; }
      // Report keys are written by agents: a malformed one names nothing to reconcile.
      for (const k of c.workers) {
        const parsed = parseOrSkip(parseWorkerKey, k);
        if (parsed) ew.enqueue(parsed);
      }
      for (const k of c.actors) {
        const parsed = parseOrSkip(parseActorClassKey, k);
        if (parsed) da.enqueue(parsed);
      }
    });

    // Desired state in NATS that differs from what this operator would write (someone else
    // wrote it) is repaired by reconciling its owner: worker configs through the store's
    // index, actor configs because their reconcile compares with KV and our own writes
    // come back equal (so they cost one reconcile that writes nothing).
    onForeignWorker = (key) => {
      const p = parseOrSkip(parseWorkerKey, key);
      if (p) { ew.enqueue(p); return; }
      void store.remove(key).catch((err: unknown) => log.warn('could not remove a foreign key from the worker bucket', { key, error: err }));
    };
    const actorConfigKeys = new Set<string>();
    const actorConfigsFollower = followBucket(buckets.actors, {
      put: (key) => { actorConfigKeys.add(key); if (this.synced) enqueueActorKey(key); },
      delete: (key) => { actorConfigKeys.delete(key); if (this.synced) enqueueActorKey(key); },
    }, { log, name: 'actor-configs' });
    const enqueueActorKey = (key: string) => {
      const p = parseOrSkip(parseActorClassKey, key);
      if (p) { da.enqueue(p); return; }
      void buckets.actors.purge(key).catch((err: unknown) => log.warn('could not remove a foreign key from the actor bucket', { key, error: err }));
    };

    this.cleanups.push(() => Promise.all([ew.stop(), da.stop()]).then(() => undefined), () => workers.stop(), () => actors.stop(), () => nodes.stop(), () => deployments.stop(), () => agents.stop(), () => policies.stop(), () => models.stop(), () => refs.stop(), () => store.stop(), () => actorConfigsFollower.stop());
    await Promise.all([workers.start(), actors.start(), nodes.start(), policies.start(), models.start(), deployments.start(), agents.start(), store.start(), actorConfigsFollower.initial]);
    refs.update(workers.list());
    this.synced = true;
    ew.enqueueAll();
    da.enqueueAll();
    // Configs in NATS whose EdgeWorker is gone (deleted while no leader ran): reconcile
    // them too, which removes them.
    for (const k of store.keys()) {
      const p = parseOrSkip(parseWorkerKey, k);
      if (p && !workers.get(p.namespace, p.name)) ew.enqueue(p);
    }
    for (const k of actorConfigKeys) {
      const p = parseOrSkip(parseActorClassKey, k);
      if (!p || !actors.get(p.namespace, p.name)) enqueueActorKey(k);
    }
    log.info('controllers started', { workers: workers.list().length, actors: actors.list().length, nodes: nodes.list().length });

    const housekeeping = setInterval(() => {
      void (async () => {
        const swept = await store.sweep();
        if (swept > 0) log.info('deleted unused bundles', { count: swept });
        for (const k of agents.staleReportKeys(60_000)) await buckets.reports.delete(k);
        // Agents, not processes: an agent's isolate hosts count with it (common/isolate-hosts.ts).
        const perRegion = new Map<string, Set<string>>();
        for (const p of agents.agents()) perRegion.set(p.region, (perRegion.get(p.region) ?? new Set()).add(agentOf(p)));
        this.metrics.agentsLive.reset();
        for (const [region, names] of perRegion) this.metrics.agentsLive.set({ region }, names.size);
        let ready = 0;
        for (const w of workers.list()) if (w.status?.conditions?.find((c) => c.type === ConditionTypes.Ready)?.status === 'True') ready++;
        this.metrics.workers.set({ ready: 'true' }, ready);
        this.metrics.workers.set({ ready: 'false' }, workers.list().length - ready);
      })().catch((err: unknown) => log.warn('housekeeping failed', { error: err }));
    }, 30_000);
    const resync = setInterval(() => { ew.enqueueAll(); da.enqueueAll(); }, this.opts.resyncMs ?? 300_000);
    const secretPoll = setInterval(() => { for (const w of workers.list()) if (hasSecretRefs(w)) ew.enqueue(objectKeyOf(w)); }, this.opts.secretPollMs ?? 30_000);
    this.cleanups.push(() => { clearInterval(housekeeping); clearInterval(resync); clearInterval(secretPoll); });

    ew.start();
    da.start();
  }

  private observeQueue(e: WorkQueueMetricsEvent): void {
    this.metrics.observeQueue(e);
    this.metrics.queueDepth.set(this.controllers.reduce((n, c) => n + c.queueLength, 0));
  }

  private async startAdmin({ host, port, serve }: AdminListen): Promise<number> {
    const { server, port: bound } = await startAdminServer({
      registry: this.metrics.registry,
      // A follower is ready too: it is up and waiting for the Lease.
      notReady: () => this.startup.waiting ?? (this.nc && !this.nc.isClosed() ? undefined : 'not connected to NATS'),
      status: () => ({ identity: this.opts.identity, leader: this.isLeader, active: this.isActive }),
    }, port, host, serve);
    this.admins.push(server);
    return bound;
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const c of this.cleanups.splice(0).reverse()) await c();
    await this.leading;
    await this.elector?.release();
    for (const a of this.admins) a.close();
    await this.nc?.drain().catch(() => undefined);
    disposeBundleChecker();
  }
}
