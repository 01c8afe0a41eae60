import { createServer } from 'node:net';
import { join } from 'node:path';
import { CoreV1Api, type V1Taint } from '@kubernetes/client-node';
import { GPU_TAINT_KEY, POOL_GPU, POOL_ISOLATE, POOL_LABEL, REGION_LABEL } from '../../common/labels.js';
import { startControlPlane, type ControlPlane } from './control-plane.js';
import { installCrds } from './crds.js';
import { ANY_MODEL, startOpenAiServer, type OpenAiServer } from './model-stub.js';
import { freePort, waitFor } from './ports.js';
import { ManagedProcess } from './process.js';
import { REPO_ROOT } from './tools.js';

// The whole system on loopback for `edge dev`, every piece a real process: the control
// plane (etcd, kube-apiserver, nats-server with JetStream) with the CRDs installed, Node
// objects for each region (an isolate node and a tainted GPU node), one `edge agent --nats`
// per region and one `edge operator`. There is no GPU and no kubelet: each region gets a
// stand-in model server (cli/local/model-stub.ts, in this process) that `env.AI` reaches
// through the agents' --ai-url-template; it echoes, it does not generate.
// (test/harness/edge-cluster.ts starts the same shape for the tests, with more knobs.)

export const EDGE_BIN = join(REPO_ROOT, 'bin/edge.mjs');

export interface LocalAgent { region: string; node: string; port: number; admin: number; peer: number; url: string; proc: ManagedProcess }
export interface LocalOperator { admin: number; proc: ManagedProcess }

export interface LocalClusterOptions {
  regions: string[];
  /** HTTP port wanted for each region's agent (same order); one that is taken is replaced by a free one. */
  ports?: number[];
  /** Pause between streamed tokens of the stand-in model servers. */
  modelTokenDelayMs?: number;
  /** Progress lines while it starts. */
  progress?: (line: string) => void;
}

/** True when nothing listens on 127.0.0.1:port. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((r) => {
    const s = createServer().once('error', () => r(false)).listen(port, '127.0.0.1', () => s.close(() => r(true)));
  });
}

const secs = (t0: number) => `${((performance.now() - t0) / 1000).toFixed(1)} s`;

export class LocalCluster {
  readonly agents: LocalAgent[] = [];
  operator: LocalOperator | undefined;
  readonly models = new Map<string, OpenAiServer>();
  private stopping: Promise<void> | undefined;

  private constructor(readonly cp: ControlPlane, readonly opts: LocalClusterOptions) {}

  static async start(opts: LocalClusterOptions): Promise<LocalCluster> {
    const say = opts.progress ?? (() => {});
    const t0 = performance.now();
    say('starting etcd, kube-apiserver and nats-server...');
    const cp = await startControlPlane();
    say(`control plane ready (${secs(t0)})`);
    const c = new LocalCluster(cp, opts);
    try {
      const t1 = performance.now();
      await Promise.all([
        installCrds(cp.kubeConfig, 'edge-dev'),
        c.createNodes(),
        ...opts.regions.map(async (r) => {
          c.models.set(r, await startOpenAiServer({ model: ANY_MODEL, label: `stand-in model, ${r}`, tokenDelayMs: opts.modelTokenDelayMs ?? 0 }));
        }),
      ]);
      say(`CRDs installed, Nodes labelled for ${opts.regions.join(', ')}, stand-in model servers up (${secs(t1)})`);
      const ports = await c.pickPorts();
      say(`starting ${opts.regions.length} agents and the operator...`);
      await Promise.all([
        ...opts.regions.map(async (r, i) => {
          const t = performance.now();
          const a = await c.startAgent(r, ports[i]!);
          say(`  agent ${a.node} ready on ${a.url} (${secs(t)})`);
        }),
        (async () => {
          const t = performance.now();
          await c.startOperator();
          say(`  operator ready (${secs(t)})`);
        })(),
      ]);
      c.agents.sort((a, b) => opts.regions.indexOf(a.region) - opts.regions.indexOf(b.region));
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  get kubeConfig() { return this.cp.kubeConfig; }

  private async pickPorts(): Promise<number[]> {
    const out: number[] = [];
    for (const [i] of this.opts.regions.entries()) {
      const wanted = this.opts.ports?.[i];
      out.push(wanted !== undefined && wanted > 0 && !out.includes(wanted) && (await portFree(wanted)) ? wanted : await freePort());
    }
    return out;
  }

  private async createNodes(): Promise<void> {
    const core = this.cp.kubeConfig.makeApiClient(CoreV1Api);
    const gpuTaint: V1Taint = { key: GPU_TAINT_KEY, value: 'present', effect: 'NoSchedule' };
    await Promise.all(this.opts.regions.flatMap((r) => [
      core.createNode({ body: { metadata: { name: `isolate-${r}`, labels: { [REGION_LABEL]: r, [POOL_LABEL]: POOL_ISOLATE } } } }),
      core.createNode({ body: { metadata: { name: `gpu-${r}`, labels: { [REGION_LABEL]: r, [POOL_LABEL]: POOL_GPU } }, spec: { taints: [gpuTaint] } } }),
    ]));
  }

  private log(name: string): string { return join(this.cp.dir, `${name}.log`); }

  private async startAgent(region: string, port: number): Promise<LocalAgent> {
    const node = `isolate-${region}`;
    const [admin, peer] = await Promise.all([freePort(), freePort()]);
    const model = this.models.get(region);
    const proc = new ManagedProcess(`agent-${region}`, process.execPath, [
      '--no-node-snapshot', EDGE_BIN, 'agent', '--nats', this.cp.natsUrl, '--region', region, '--node', node,
      '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${admin}`, '--peer-listen', `127.0.0.1:${peer}`,
      '--pool-size', '2',
      ...(model ? ['--ai-url-template', model.url] : []),
    ], { logFile: this.log(`agent-${region}`), cwd: REPO_ROOT });
    await waitFor(`agent ${node} /readyz`, async () => { proc.assertRunning(); return (await fetch(`http://127.0.0.1:${admin}/readyz`)).ok; }, 90_000, 100);
    const a = { region, node, port, admin, peer, proc, url: `http://127.0.0.1:${port}` };
    this.agents.push(a);
    return a;
  }

  private async startOperator(): Promise<LocalOperator> {
    const admin = await freePort();
    const proc = new ManagedProcess('operator', process.execPath, [
      '--no-node-snapshot', EDGE_BIN, 'operator', '--nats', this.cp.natsUrl, '--kubeconfig', this.cp.kubeconfigPath,
      '--admin', `127.0.0.1:${admin}`, '--identity', 'edge-dev', '--lease-namespace', 'default',
    ], { logFile: this.log('operator'), cwd: REPO_ROOT });
    await waitFor('operator /healthz', async () => { proc.assertRunning(); return (await fetch(`http://127.0.0.1:${admin}/healthz`)).ok; }, 90_000, 100);
    this.operator = { admin, proc };
    return this.operator;
  }

  /** Every process this cluster runs, for the banner and the checks. */
  get processes(): ManagedProcess[] {
    return [...this.cp.processes, ...this.agents.map((a) => a.proc), ...(this.operator ? [this.operator.proc] : [])];
  }

  /** The operator first (so it writes nothing more), then the agents (they drain), then the rest. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.operator?.proc.stop(5000);
      await Promise.all(this.agents.map((a) => a.proc.stop(8000)));
      await Promise.all([...this.models.values()].map((m) => m.close()));
      await this.cp.stop();
    })();
    return this.stopping;
  }
}
