import { join } from 'node:path';
import { CoreV1Api, type V1Taint } from '@kubernetes/client-node';
import { GPU_TAINT_KEY, POOL_GPU, POOL_ISOLATE, POOL_LABEL, REGION_LABEL } from '../../common/labels.js';
import { startControlPlane, type ControlPlane } from './control-plane.js';
import { installCrds } from './crds.js';
import { freePort, waitFor } from './ports.js';
import { ManagedProcess } from './process.js';
import { REPO_ROOT } from './tools.js';

// A whole edge cluster on loopback: a control plane of its own (so the operator sees only
// this test's objects), Node objects labelled per region (one isolate node and one GPU
// node each), an `edge agent --nats` process per isolate node, optional fake model
// servers per region, and `edge operator` processes. All real processes.

export const EDGE_BIN = join(REPO_ROOT, 'bin/edge.mjs');

export interface AgentProc { region: string; node: string; port: number; admin: number; peer: number; proc: ManagedProcess; url: string }
export interface OperatorProc { identity: string; admin: number; proc: ManagedProcess }
export interface ModelServer { region: string; port: number; url: string; proc: ManagedProcess }

export interface EdgeClusterOptions {
  regions: string[];
  /** Regions that get Node objects but no agent process. */
  regionsWithoutAgents?: string[];
  presenceTtlMs?: number;
  /** Agents (and isolate Nodes) per region; default 1. Nodes are `isolate-<region>` or `isolate-<region>-<i>`. */
  agentsPerRegion?: number;
  /** Start a fake OpenAI-compatible server per region serving this model. */
  aiModel?: string;
  leaseDurationMs?: number;
}

export interface StartOperatorOptions {
  /** Kubeconfig the operator uses (default: the harness admin's). */
  kubeconfig?: string;
  /** Namespace of its Lease (default `default`). */
  leaseNamespace?: string;
  /** Name of its Lease (default: the operator's own default). */
  leaseName?: string;
}

export class EdgeCluster {
  readonly agents: AgentProc[] = [];
  readonly operators: OperatorProc[] = [];
  readonly models = new Map<string, ModelServer>();
  private seq = 0;

  private constructor(readonly cp: ControlPlane, readonly opts: EdgeClusterOptions) {}

  static async start(opts: EdgeClusterOptions): Promise<EdgeCluster> {
    const cp = await startControlPlane();
    const c = new EdgeCluster(cp, opts);
    try {
      await installCrds(cp.kubeConfig);
      await c.createNodes();
      if (opts.aiModel) await Promise.all(opts.regions.map((r) => c.startModelServer(r, opts.aiModel!)));
      const starts: Promise<AgentProc>[] = [];
      for (const r of opts.regions.filter((x) => !(opts.regionsWithoutAgents ?? []).includes(x))) {
        for (const node of c.isolateNodes(r)) starts.push(c.startAgent(r, node));
      }
      await Promise.all(starts);
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  get kubeConfig() { return this.cp.kubeConfig; }

  isolateNodes(region: string): string[] {
    const n = this.opts.agentsPerRegion ?? 1;
    return n === 1 ? [`isolate-${region}`] : Array.from({ length: n }, (_, i) => `isolate-${region}-${i}`);
  }

  private async createNodes(): Promise<void> {
    const core = this.cp.kubeConfig.makeApiClient(CoreV1Api);
    const gpuTaint: V1Taint = { key: GPU_TAINT_KEY, value: 'present', effect: 'NoSchedule' };
    for (const r of this.opts.regions) {
      for (const node of this.isolateNodes(r)) {
        await core.createNode({ body: { metadata: { name: node, labels: { [REGION_LABEL]: r, [POOL_LABEL]: POOL_ISOLATE } } } });
      }
      await core.createNode({ body: { metadata: { name: `gpu-${r}`, labels: { [REGION_LABEL]: r, [POOL_LABEL]: POOL_GPU } }, spec: { taints: [gpuTaint] } } });
    }
  }

  private log(name: string): string { return join(this.cp.dir, `${name}.log`); }

  async startModelServer(region: string, model: string): Promise<ModelServer> {
    const port = await freePort();
    const proc = new ManagedProcess(`model-${region}`, process.execPath, [
      '--import', 'tsx', join(REPO_ROOT, 'test/fixtures/openai-server.ts'), '--port', String(port), '--model', model, '--label', region,
    ], { logFile: this.log(`model-${region}`), cwd: REPO_ROOT });
    const url = `http://127.0.0.1:${port}`;
    await waitFor(`model server ${region}`, async () => { proc.assertRunning(); return (await fetch(`${url}/health`)).ok; }, 30_000, 100);
    const m = { region, port, url, proc };
    this.models.set(region, m);
    return m;
  }

  async startAgent(region: string, node: string): Promise<AgentProc> {
    const [port, admin, peer] = await Promise.all([freePort(), freePort(), freePort()]);
    const model = this.models.get(region);
    const args = [
      '--no-node-snapshot', EDGE_BIN, 'agent', '--nats', this.cp.natsUrl, '--region', region, '--node', node,
      '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${admin}`, '--peer-listen', `127.0.0.1:${peer}`, '--presence-ttl-ms', String(this.opts.presenceTtlMs ?? 1000),
      '--pool-size', '2',
      ...(model ? ['--ai-url-template', model.url] : []),
    ];
    const proc = new ManagedProcess(`agent-${node}`, process.execPath, args, { logFile: this.log(`agent-${node}-${this.seq++}`), cwd: REPO_ROOT });
    await waitFor(`agent ${node} /readyz`, async () => { proc.assertRunning(); return (await fetch(`http://127.0.0.1:${admin}/readyz`)).ok; }, 60_000, 100);
    const a = { region, node, port, admin, peer, proc, url: `http://127.0.0.1:${port}` };
    this.agents.push(a);
    return a;
  }

  /**
   * Starts `edge operator`. By default it runs as the harness admin with its Lease in
   * `default`; `kubeconfig` gives it other credentials (a ServiceAccount token), and
   * `leaseNamespace`/`leaseName` the Lease its RBAC allows.
   */
  async startOperator(identity = `operator-${this.seq}`, opts: StartOperatorOptions = {}): Promise<OperatorProc> {
    const admin = await freePort();
    const lease = this.opts.leaseDurationMs ?? 2000;
    const proc = new ManagedProcess(identity, process.execPath, [
      '--no-node-snapshot', EDGE_BIN, 'operator', '--nats', this.cp.natsUrl, '--kubeconfig', opts.kubeconfig ?? this.cp.kubeconfigPath,
      '--admin', `127.0.0.1:${admin}`, '--identity', identity, '--lease-namespace', opts.leaseNamespace ?? 'default',
      ...(opts.leaseName ? ['--lease-name', opts.leaseName] : []),
      '--lease-duration-ms', String(lease), '--renew-deadline-ms', String(Math.floor(lease * 0.75)), '--retry-period-ms', String(Math.floor(lease / 8)),
      '--ai-image', 'example.test/model-server:1',
    ], { logFile: this.log(`${identity}-${this.seq++}`), cwd: REPO_ROOT });
    await waitFor(`${identity} /healthz`, async () => { proc.assertRunning(); return (await fetch(`http://127.0.0.1:${admin}/healthz`)).ok; }, 60_000, 100);
    const o = { identity, admin, proc };
    this.operators.push(o);
    return o;
  }

  async operatorStatus(o: OperatorProc): Promise<{ leader: boolean; active: boolean } | undefined> {
    if (!o.proc.running) return undefined;
    try { return (await (await fetch(`http://127.0.0.1:${o.admin}/status`)).json()) as { leader: boolean; active: boolean }; } catch { return undefined; }
  }

  agent(region: string): AgentProc {
    const a = this.agents.find((x) => x.region === region && x.proc.running);
    if (!a) throw new Error(`no running agent in ${region}`);
    return a;
  }

  async stop(): Promise<void> {
    await Promise.all(this.operators.map((o) => o.proc.stop(3000)));
    await Promise.all(this.agents.map((a) => a.proc.stop(3000)));
    await Promise.all([...this.models.values()].map((m) => m.proc.stop(2000)));
    await this.cp.stop();
  }
}

/** GET through an agent with a Host header; returns status and body text. */
export async function get(agent: { port: number }, host: string, path = '/'): Promise<{ status: number; text: string }> {
  const { request } = await import('node:http');
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: agent.port, path, headers: { host }, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(15_000, () => req.destroy(new Error(`GET ${host}${path}: no answer in 15 s`)));
    req.end();
  });
}
