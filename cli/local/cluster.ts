import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { CoreV1Api, type V1Taint } from '@kubernetes/client-node';
import { APP_NAME_LABEL, GPU_TAINT_KEY, INFERENCE_APP, POOL_GPU, POOL_ISOLATE, POOL_LABEL, REGION_LABEL } from '../../common/labels.js';
import { startControlPlane, type ControlPlane } from './control-plane.js';
import { installCrds } from './crds.js';
import { ANY_MODEL, startOpenAiServer, type OpenAiServer } from './model-stub.js';
import { freePort, waitFor } from './ports.js';
import { retryTransient } from './retry.js';
import { ManagedProcess } from './process.js';
import { REPO_ROOT } from './tools.js';
import { API_VERSION, EDGE_MODEL, type AiTaskType } from '../../common/api/index.js';
import { shortHash } from '../../common/model-servers.js';
import { KubeClient, crPath } from '../../operator/runtime/kube-client.js';

// The whole system on loopback, every piece a real process: the control plane (etcd,
// kube-apiserver, nats-server with JetStream and a user per role) with the CRDs installed, Node objects for each
// region (isolate nodes and a tainted GPU node), `edge agent --nats` processes per region and
// `edge operator` processes, each with its role's NATS credentials and the key secrets are
// sealed with (cp.sealingKeyFile). There is no GPU and no kubelet: with `models`, each region gets
// a stand-in model server (cli/local/model-stub.ts, in this process) that `env.AI` reaches
// through the agents' --ai-url-template; it echoes, it does not generate.
//
// The one starter for `edge dev` (cli/dev.ts), the integration tests and bench/: each cluster
// has a control plane of its own, because the operator acts on every object it can see.
// Every process is a ManagedProcess (`proc`), so a test can SIGKILL or SIGSTOP it and read
// its log (`proc.logFile`); all logs are in `cp.dir` (kept with EDGE_KEEP_TMP=1).

export const EDGE_BIN = join(REPO_ROOT, 'bin/edge.mjs');

export interface LocalAgent { region: string; node: string; port: number; admin: number; url: string; proc: ManagedProcess }
export interface LocalOperator { identity: string; admin: number; proc: ManagedProcess }

export interface ModelStubOptions {
  /** The model each region's server serves (default ANY_MODEL: whatever a request names). */
  model?: string;
  /** The label in its completions, "[label] echo: ..." (default: the region). */
  label?: (region: string) => string;
  /** Pause between streamed tokens. */
  tokenDelayMs?: number;
  /**
   * The operator's inference Deployments count as ready (`edge dev`): with no kubelet here
   * they never run, and the stand-in server of each region answers for them, so their
   * status is written as a kubelet would once their pods were ready.
   */
  standInsReady?: boolean;
}

export interface StartOperatorOptions {
  /** Kubeconfig the operator uses (default: the control plane's admin). */
  kubeconfig?: string;
  /** Namespace of its Lease (default `default`). */
  leaseNamespace?: string;
  /** Name of its Lease (default: the operator's own default). */
  leaseName?: string;
  /** More `edge operator` flags. */
  args?: string[];
}

export interface LocalClusterOptions {
  regions: string[];
  /** Agents (and isolate Nodes) per region; default 1. Nodes are `isolate-<region>`, or `isolate-<region>-<i>` when more than one. */
  agentsPerRegion?: number;
  /** HTTP port wanted for each agent (regions in order, then nodes); one that is taken is replaced by a free one. Default: free ports. */
  ports?: number[];
  /** The agents' --presence-ttl-ms (default: the agent's own). */
  presenceTtlMs?: number;
  /** The operators' Lease duration; renew deadline and retry period follow from it (default: the operator's own). */
  leaseDurationMs?: number;
  /** The agents' --isolate-hosts (default: the agent's own, 2; 0 runs isolates in the agent process). */
  isolateHosts?: number;
  /**
   * The agents' --drain-delay-ms. Default 0: no load balancer stands in front of a local
   * cluster's agents, so nothing has to learn first that one drains.
   */
  drainDelayMs?: number;
  /** More `edge agent` flags, for every agent. */
  agentArgs?: string[];
  /** Start one operator with this identity along with the agents; without it, call startOperator() when wanted. */
  operator?: { identity: string } & StartOperatorOptions;
  /** A stand-in model server per region (none without it). */
  models?: ModelStubOptions;
  /**
   * Model ids the cluster's catalogue offers (one EdgeModel each, 1 GPU per replica): ai
   * bindings may name only these. Default: `models.model` when it names one.
   */
  catalogue?: Array<string | CatalogueEntry>;
  /** Field manager of the CRDs' server-side apply (default `edge-isolates`). */
  fieldManager?: string;
  /** Keep the control plane's temp dir (logs, data) after stop; also when EDGE_KEEP_TMP=1. */
  keepDir?: boolean;
  /** nats-servers of the control plane (default 1; 3 is a JetStream cluster with 3 replicas of every stream: cp.nats). */
  natsServers?: number;
  /** Progress lines while it starts. */
  progress?: (line: string) => void;
}

/**
 * For tests and the bench: a dead agent leaves its region's rings in a second and a dead
 * operator's Lease is taken over in two, where the production defaults take many times that.
 */
export const QUICK_FAILOVER = { presenceTtlMs: 1000, leaseDurationMs: 2000 } as const satisfies Partial<LocalClusterOptions>;

/** A catalogue model with more than an id: its task type and (for images, which vLLM does not serve) a server image. */
export interface CatalogueEntry { model: string; task?: AiTaskType; image?: string; gpus?: number }

/** The EdgeModel name LocalCluster gives a model id: a DNS label. */
export function catalogueName(model: string): string {
  const base = model.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 50).replace(/-+$/, '');
  return `${base || 'model'}-${shortHash(model)}`;
}

/** True when nothing listens on 127.0.0.1:port. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((r) => {
    const s = createServer().once('error', () => r(false)).listen(port, '127.0.0.1', () => s.close(() => r(true)));
  });
}

const secs = (t0: number) => `${((performance.now() - t0) / 1000).toFixed(1)} s`;

/** How long an agent or an operator gets from spawn to ready (a loaded 2-core machine is slow to load TypeScript). */
const READY_TIMEOUT_MS = 90_000;

export class LocalCluster {
  /**
   * The secret every agent of this cluster authenticates peer calls with ($EDGE_PEER_TOKEN),
   * made up per cluster: the peer port is never open, `edge dev` included.
   */
  readonly peerToken = randomBytes(32).toString('base64url');
  /** The bearer token that reads an agent's full admin /status ($EDGE_ADMIN_TOKEN). */
  readonly adminToken = randomBytes(32).toString('base64url');
  readonly agents: LocalAgent[] = [];
  readonly operators: LocalOperator[] = [];
  readonly models = new Map<string, OpenAiServer>();
  /** Starts per log name, so a restarted process writes a log of its own. */
  private readonly logs = new Map<string, number>();
  private stopping: Promise<void> | undefined;
  private standIns: NodeJS.Timeout | undefined;

  private constructor(readonly cp: ControlPlane, readonly opts: LocalClusterOptions) {}

  static async start(opts: LocalClusterOptions): Promise<LocalCluster> {
    const say = opts.progress ?? (() => {});
    const t0 = performance.now();
    say('starting etcd, kube-apiserver and nats-server...');
    const cp = await startControlPlane({ keepDir: opts.keepDir, natsServers: opts.natsServers });
    say(`control plane ready (${secs(t0)})`);
    const c = new LocalCluster(cp, opts);
    try {
      const t1 = performance.now();
      const models = opts.models;
      const catalogue = opts.catalogue ?? (models?.model && models.model !== ANY_MODEL ? [models.model] : []);
      // Each step waits out a just-started apiserver's transient 429s (retry.ts).
      await Promise.all([
        retryTransient(() => installCrds(cp.kubeConfig, opts.fieldManager)).then(() => c.createCatalogue(catalogue)),
        c.createNodes(),
        ...(models ? opts.regions.map(async (r) => {
          c.models.set(r, await startOpenAiServer({ model: models.model ?? ANY_MODEL, label: models.label?.(r) ?? r, tokenDelayMs: models.tokenDelayMs ?? 0 }));
        }) : []),
      ]);
      say(`CRDs installed, Nodes labelled for ${opts.regions.join(', ')}${models ? ', stand-in model servers up' : ''} (${secs(t1)})`);
      const nodes = opts.regions.flatMap((region) => c.isolateNodes(region).map((node) => ({ region, node })));
      const ports = await c.pickPorts(nodes.length);
      say(`starting ${nodes.length} agents${opts.operator ? ' and the operator' : ''}...`);
      const operator = opts.operator;
      await Promise.all([
        ...nodes.map(async ({ region, node }, i) => {
          const t = performance.now();
          const a = await c.startAgent(region, node, ports[i]);
          say(`  agent ${a.node} ready on ${a.url} (${secs(t)})`);
        }),
        ...(operator ? [(async () => {
          const t = performance.now();
          await c.launchOperator('operator', operator.identity, operator);
          say(`  operator ready (${secs(t)})`);
        })()] : []),
      ]);
      const order = nodes.map((n) => n.node);
      c.agents.sort((a, b) => order.indexOf(a.node) - order.indexOf(b.node));
      if (models?.standInsReady) c.markStandInsReady();
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  get kubeConfig() { return this.cp.kubeConfig; }

  /** The isolate Node names of a region. */
  isolateNodes(region: string): string[] {
    const n = this.opts.agentsPerRegion ?? 1;
    return n === 1 ? [`isolate-${region}`] : Array.from({ length: n }, (_, i) => `isolate-${region}-${i}`);
  }

  private async pickPorts(n: number): Promise<number[]> {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const wanted = this.opts.ports?.[i];
      out.push(wanted !== undefined && wanted > 0 && !out.includes(wanted) && (await portFree(wanted)) ? wanted : await freePort());
    }
    return out;
  }

  private async createNodes(): Promise<void> {
    const core = this.cp.kubeConfig.makeApiClient(CoreV1Api);
    const gpuTaint: V1Taint = { key: GPU_TAINT_KEY, value: 'present', effect: 'NoSchedule' };
    await Promise.all(this.opts.regions.flatMap((r) => [
      ...this.isolateNodes(r).map((node) => retryTransient(() => core.createNode({ body: { metadata: { name: node, labels: { [REGION_LABEL]: r, [POOL_LABEL]: POOL_ISOLATE } } } }))),
      retryTransient(() => core.createNode({ body: { metadata: { name: `gpu-${r}`, labels: { [REGION_LABEL]: r, [POOL_LABEL]: POOL_GPU } }, spec: { taints: [gpuTaint] } } })),
    ]));
  }

  /** One EdgeModel per model id (the admin's catalogue; the stand-in servers answer for any of them). */
  private async createCatalogue(entries: Array<string | CatalogueEntry>): Promise<void> {
    const kube = new KubeClient(this.cp.kubeConfig);
    await Promise.all(entries.map((e) => (typeof e === 'string' ? { model: e } : e)).map((e) => retryTransient(() => kube.request('POST', crPath(EDGE_MODEL.plural), {
      body: { apiVersion: API_VERSION, kind: EDGE_MODEL.kind, metadata: { name: catalogueName(e.model) }, spec: { gpus: 1, ...e } },
    }))));
  }

  /** Every second, inference Deployments whose status is short of their replicas are given a ready status (ModelStubOptions.standInsReady). */
  private markStandInsReady(): void {
    const kube = new KubeClient(this.cp.kubeConfig);
    type Dep = { metadata: { name: string; namespace: string; generation?: number }; spec?: { replicas?: number }; status?: { readyReplicas?: number } };
    let busy = false;
    const tick = async () => {
      if (busy || this.stopping) return;
      busy = true;
      try {
        const list = await kube.request<{ items: Dep[] }>('GET', '/apis/apps/v1/deployments', { query: { labelSelector: `${APP_NAME_LABEL}=${INFERENCE_APP}` } });
        for (const d of list.items) {
          const n = d.spec?.replicas ?? 1;
          if ((d.status?.readyReplicas ?? 0) >= n) continue;
          await kube.request('PATCH', `/apis/apps/v1/namespaces/${d.metadata.namespace}/deployments/${d.metadata.name}/status`, {
            patch: 'merge',
            body: { status: { observedGeneration: d.metadata.generation ?? 1, replicas: n, readyReplicas: n, availableReplicas: n, updatedReplicas: n } },
          });
        }
      } catch { /* next tick */ } finally { busy = false; }
    };
    this.standIns = setInterval(() => { void tick(); }, 1000);
    this.standIns.unref();
    void tick();
  }

  /** `<name>.log` the first time, `<name>.<n>.log` for the n-th start under the same name. */
  private logFile(name: string): string {
    const n = (this.logs.get(name) ?? 0) + 1;
    this.logs.set(name, n);
    return join(this.cp.dir, n === 1 ? `${name}.log` : `${name}.${n}.log`);
  }

  /**
   * Starts an agent for `node` (one of isolateNodes(region); again after it was killed, to
   * bring it back) and waits until it is ready. `port` is its HTTP port (default: a free one).
   */
  async startAgent(region: string, node: string, port?: number): Promise<LocalAgent> {
    const [http, admin] = await Promise.all([port ?? freePort(), freePort()]);
    const model = this.models.get(region);
    const name = `agent-${node.replace(/^isolate-/, '')}`;
    const proc = new ManagedProcess(name, process.execPath, [
      '--no-node-snapshot', EDGE_BIN, 'agent', '--nats', this.cp.natsUrl, '--region', region, '--node', node,
      '--nats-user', this.cp.natsCredentials.agent.user, '--nats-password-file', this.cp.natsCredentials.agent.passwordFile,
      '--sealing-key-file', this.cp.sealingKeyFile,
      '--listen', `127.0.0.1:${http}`, '--admin', `127.0.0.1:${admin}`,
      // Peer ports (one per isolate host) are any free ones: each process advertises its own.
      '--peer-listen', '127.0.0.1:0',
      '--pool-size', '2',
      ...(this.opts.presenceTtlMs !== undefined ? ['--presence-ttl-ms', String(this.opts.presenceTtlMs)] : []),
      '--drain-delay-ms', String(this.opts.drainDelayMs ?? 0),
      ...((this.opts.natsServers ?? 1) >= 3 ? ['--actor-log-replicas', '3'] : []),
      ...(model ? ['--ai-url-template', model.url] : []),
      ...(this.opts.isolateHosts !== undefined ? ['--isolate-hosts', String(this.opts.isolateHosts)] : []),
      ...(this.opts.agentArgs ?? []),
    ], { logFile: this.logFile(name), cwd: REPO_ROOT, env: { ...process.env, EDGE_PEER_TOKEN: this.peerToken, EDGE_ADMIN_TOKEN: this.adminToken } });
    const a = { region, node, port: http, admin, proc, url: `http://127.0.0.1:${http}` };
    // Listed before it is ready, so stop() takes it down when it never gets there.
    this.agents.push(a);
    await waitFor(`agent ${node} /readyz`, async () => { proc.assertRunning(); return (await fetch(`http://127.0.0.1:${admin}/readyz`)).ok; }, READY_TIMEOUT_MS, 100);
    return a;
  }

  /**
   * Starts `edge operator` as `identity` and waits until it is healthy (not until it leads:
   * see operatorStatus). By default it runs as the control plane's admin with its Lease in
   * `default`; `kubeconfig` gives it other credentials (a ServiceAccount token), and
   * `leaseNamespace`/`leaseName` the Lease its RBAC allows.
   */
  startOperator(identity: string, opts: StartOperatorOptions = {}): Promise<LocalOperator> {
    return this.launchOperator(identity, identity, opts);
  }

  private async launchOperator(name: string, identity: string, opts: StartOperatorOptions): Promise<LocalOperator> {
    const admin = await freePort();
    const lease = this.opts.leaseDurationMs;
    const proc = new ManagedProcess(name, process.execPath, [
      '--no-node-snapshot', EDGE_BIN, 'operator', '--nats', this.cp.natsUrl, '--kubeconfig', opts.kubeconfig ?? this.cp.kubeconfigPath,
      '--nats-user', this.cp.natsCredentials.operator.user, '--nats-password-file', this.cp.natsCredentials.operator.passwordFile,
      '--sealing-key-file', this.cp.sealingKeyFile,
      '--admin', `127.0.0.1:${admin}`, '--identity', identity, '--lease-namespace', opts.leaseNamespace ?? 'default',
      ...(opts.leaseName ? ['--lease-name', opts.leaseName] : []),
      // A bound Secret's change shows within a second, as a watch would show it.
      '--secret-poll-ms', '1000',
      ...(lease !== undefined
        ? ['--lease-duration-ms', String(lease), '--renew-deadline-ms', String(Math.floor(lease * 0.75)), '--retry-period-ms', String(Math.floor(lease / 8))]
        : []),
      ...(opts.args ?? []),
    ], { logFile: this.logFile(name), cwd: REPO_ROOT });
    const o = { identity, admin, proc };
    this.operators.push(o);
    await waitFor(`${name} /healthz`, async () => { proc.assertRunning(); return (await fetch(`http://127.0.0.1:${admin}/healthz`)).ok; }, READY_TIMEOUT_MS, 100);
    return o;
  }

  /** An agent's full admin /status (it needs the cluster's admin token). */
  async agentStatus<T = { ready: boolean; workers: unknown[]; actors: string[] }>(a: LocalAgent): Promise<T> {
    const res = await fetch(`http://127.0.0.1:${a.admin}/status`, { headers: { authorization: `Bearer ${this.adminToken}` } });
    if (!res.ok) throw new Error(`agent ${a.node} /status answered ${res.status}`);
    return (await res.json()) as T;
  }

  /** The operator's /status, or undefined when it is not running or does not answer. */
  async operatorStatus(o: LocalOperator): Promise<{ leader: boolean; active: boolean } | undefined> {
    if (!o.proc.running) return undefined;
    try { return (await (await fetch(`http://127.0.0.1:${o.admin}/status`)).json()) as { leader: boolean; active: boolean }; } catch { return undefined; }
  }

  /** A running agent of the region. */
  agent(region: string): LocalAgent {
    const a = this.agents.find((x) => x.region === region && x.proc.running);
    if (!a) throw new Error(`no running agent in ${region}`);
    return a;
  }

  /** Every process this cluster runs, for the banner and the checks. */
  get processes(): ManagedProcess[] {
    return [...this.cp.processes, ...this.agents.map((a) => a.proc), ...this.operators.map((o) => o.proc)];
  }

  /** The operators first (so they write nothing more), then the agents (they drain), then the rest. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      clearInterval(this.standIns);
      await Promise.all(this.operators.map((o) => o.proc.stop(5000)));
      await Promise.all(this.agents.map((a) => a.proc.stop(8000)));
      await Promise.all([...this.models.values()].map((m) => m.close()));
      await this.cp.stop();
    })();
    return this.stopping;
  }
}
