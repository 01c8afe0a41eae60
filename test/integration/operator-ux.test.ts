import { CoreV1Api, type CoreV1Event } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EdgeWorker } from '../../common/api/index.js';
import { LocalCluster, QUICK_FAILOVER } from '../../cli/local/cluster.js';
import { kubectl } from '../../cli/local/kubectl.js';
import { freePort, waitFor } from '../../cli/local/ports.js';
import { crPath, isNotFound, KubeClient } from '../../operator/runtime/kube-client.js';
import { get } from '../harness/http.js';
import { sharedControlPlane } from '../harness/shared.js';

// What a Kubernetes user sees of the operator, against the real apiserver, kubectl and
// `edge operator` (issue 18, items 6-8): kubectl explain describes every field, kubectl get
// prints Ready, Reason, Regions and Age, repeated Events aggregate into one with a count,
// and the operator takes controller-runtime's flags and serves its metric names.

describe('kubectl explain', () => {
  let kubeconfigPath: string;
  beforeAll(() => { ({ kubeconfigPath } = sharedControlPlane()); });

  it('describes every field of spec.limits, with units', async () => {
    const r = await kubectl(kubeconfigPath, ['explain', 'edgeworker.spec.limits']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/DESCRIPTION:\s+Per-request limits/);
    for (const [field, unit] of [['cpuMsPerRequest', 'milliseconds'], ['memoryMiB', 'MiB'], ['subrequests', 'count'], ['wallMsPerRequest', 'milliseconds']]) {
      // FIELDS: "  name\t<integer>" then its description, indented, up to the next field.
      const block = new RegExp(`^\\s+${field}\\s+<integer>\\n([\\s\\S]*?)(?=^\\s+\\w+\\s+<|$(?![\\s\\S]))`, 'm').exec(r.stdout)?.[1] ?? '';
      expect(block, field).toContain(unit);
    }
  });

  it('describes the DurableActor\'s fields and the status the operator writes', async () => {
    const storage = await kubectl(kubeconfigPath, ['explain', 'durableactor.spec.storage.maxBytesPerActor']);
    expect(storage.stdout).toMatch(/in bytes/);
    const cond = await kubectl(kubeconfigPath, ['explain', 'edgeworker.status.conditions.reason']);
    expect(cond.stdout).toMatch(/CamelCase/);
    const regions = await kubectl(kubeconfigPath, ['explain', 'edgeworker.status.regionsText']);
    expect(regions.stdout).toMatch(/"all"/);
  });
});

describe('edge operator as a Kubernetes user sees it', () => {
  const NS = 'ux';
  let cluster: LocalCluster;
  let kube: KubeClient;
  let metricsPort: number;
  let probesPort: number;

  const hello = (v: string) => `export default { fetch() { return new Response(${JSON.stringify(v)}); } };`;
  const read = (name: string) => kube.request<EdgeWorker>('GET', crPath('edgeworkers', NS, name));
  async function readyAt(name: string, generation: number): Promise<void> {
    await waitFor(`${name} Ready at generation ${generation}`, async () => {
      const ew = await read(name);
      const c = ew.status?.conditions?.find((x) => x.type === 'Ready');
      return ew.metadata.generation === generation && c?.status === 'True' && c.observedGeneration === generation;
    }, 60_000, 100);
  }

  beforeAll(async () => {
    cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: ['eu-west'], isolateHosts: 0 });
    kube = new KubeClient(cluster.kubeConfig);
    await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: NS } } });
    metricsPort = await freePort();
    // LocalCluster passes the older spellings (--admin, --lease-duration-ms ...); these are the new ones.
    const op = await cluster.startOperator('ux-operator', {
      args: ['--leader-elect=false', `--metrics-bind-address=127.0.0.1:${metricsPort}`, '--zap-log-level=debug', '--max-concurrent-reconciles=2', '--sync-period=1m'],
    });
    probesPort = op.admin;
  }, 240_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('--leader-elect=false acts at once without a Lease', async () => {
    await waitFor('the operator active', async () => (await (await fetch(`http://127.0.0.1:${probesPort}/status`)).json() as { active: boolean }).active, 30_000, 100);
    const lease = await kube.request('GET', '/apis/coordination.k8s.io/v1/namespaces/default/leases/edge-isolates-operator').then(() => 'found', (err: unknown) => (isNotFound(err) ? 'none' : String(err)));
    expect(lease).toBe('none');
  });

  it('kubectl get prints Ready, Reason, Regions as text ("all" for a spec naming none) and Age', async () => {
    const create = (name: string, placement: Record<string, unknown>) => kube.request('POST', crPath('edgeworkers', NS), {
      body: { apiVersion: 'edge.isolates.dev/v1alpha1', kind: 'EdgeWorker', metadata: { name, namespace: NS }, spec: { source: { inline: hello('v1') }, routes: [{ host: `${name}.test` }], placement } },
    });
    await create('hello', {});
    await create('pinned', { regions: ['eu-west'] });
    await create('lost', { regions: ['nowhere'] });
    await readyAt('hello', 1);
    await readyAt('pinned', 1);
    await waitFor('lost has a status', async () => (await read('lost')).status?.regionsText !== undefined, 30_000, 100);
    const r = await kubectl(cluster.cp.kubeconfigPath, ['-n', NS, 'get', 'ew']);
    expect(r.stderr).toBe('');
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+READY\s+REASON\s+REGIONS\s+AGE$/);
    expect(r.stdout).toMatch(/^hello\s+True\s+Serving\s+all\s+\S+$/m);
    expect(r.stdout).toMatch(/^pinned\s+True\s+Serving\s+eu-west\s+\S+$/m);
    // Not Ready, and the reason says why.
    expect(r.stdout).toMatch(/^lost\s+False\s+NoRegions\s+nowhere\s+\S+$/m);
    expect(r.stdout).not.toContain('["');
    expect(await get(cluster.agent('eu-west'), 'hello.test')).toEqual({ status: 200, text: 'v1' });
  });

  it('four deploys that end Serving give one Event with count 4, not four Events', async () => {
    // The create was the first deploy; three more, each waited for.
    for (const [i, v] of ['v2', 'v3', 'v4'].entries()) {
      // Event timestamps have whole seconds: the last deploy comes in a later second than
      // the first, so lastTimestamp moving on is seen (four deploys can fit in one second).
      if (v === 'v4') await new Promise((r) => setTimeout(r, 1100));
      await kube.request('PATCH', crPath('edgeworkers', NS, 'hello'), { patch: 'merge', body: { spec: { source: { inline: hello(v) } } } });
      await readyAt('hello', i + 2);
    }
    expect(await get(cluster.agent('eu-west'), 'hello.test')).toEqual({ status: 200, text: 'v4' });
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    let serving: CoreV1Event[] = [];
    await waitFor('the Serving event counted 4 times', async () => {
      serving = (await core.listNamespacedEvent({ namespace: NS })).items.filter((e) => e.involvedObject.name === 'hello' && e.reason === 'Serving');
      return serving.reduce((n, e) => n + (e.count ?? 1), 0) >= 4;
    }, 30_000, 200).catch((err: unknown) => { throw new Error(`${String(err)}; events: ${JSON.stringify(serving.map((e) => ({ count: e.count, message: e.message })))}`); });
    expect(serving.map((e) => e.count)).toEqual([4]);
    const [ev] = serving;
    expect(ev!.message).toBe('Ready=True: serving in eu-west 1/1 agents');
    expect(new Date(ev!.lastTimestamp!).getTime()).toBeGreaterThan(new Date(ev!.firstTimestamp!).getTime());
    const described = await kubectl(cluster.cp.kubeconfigPath, ['-n', NS, 'describe', 'ew', 'hello']);
    expect(described.stdout).toMatch(/Normal\s+Serving\s+\S+ \(x4 over \S+\)/);
  });

  it('serves controller-runtime\'s metric names on --metrics-bind-address, and the probes on their own address', async () => {
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const value = (line: string) => Number(new RegExp(`^${line.replace(/[{}"=]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text)?.[1]);
    expect(value('controller_runtime_reconcile_total{controller="edgeworker",result="success"}')).toBeGreaterThan(0);
    expect(value('controller_runtime_max_concurrent_reconciles{controller="edgeworker"}')).toBe(2);
    expect(value('controller_runtime_active_workers{controller="durableactor"}')).toBe(0);
    expect(value('workqueue_adds_total{name="edgeworker",controller="edgeworker"}')).toBeGreaterThan(0);
    expect(value('workqueue_depth{name="edgeworker",controller="edgeworker",priority=""}')).toBeGreaterThanOrEqual(0);
    for (const name of ['controller_runtime_reconcile_errors_total', 'controller_runtime_reconcile_time_seconds_bucket', 'workqueue_queue_duration_seconds_bucket',
      'workqueue_work_duration_seconds_count', 'workqueue_retries_total', 'workqueue_unfinished_work_seconds', 'workqueue_longest_running_processor_seconds', 'edge_operator_reconciles_total']) {
      expect(text, name).toMatch(new RegExp(`^${name}\\{`, 'm'));
    }
    // Each listener serves only its part.
    expect((await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${probesPort}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${probesPort}/readyz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${probesPort}/metrics`)).status).toBe(404);
  });
});
