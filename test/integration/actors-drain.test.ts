import { connect } from 'node:net';
import { CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Condition } from '../../common/api/index.js';
import { crPath, KubeClient } from '../../operator/runtime/kube-client.js';
import { LocalCluster, QUICK_FAILOVER, type LocalAgent } from '../../cli/local/cluster.js';
import { get } from '../harness/http.js';
import { waitFor } from '../../cli/local/ports.js';

// SIGTERM of an agent under steady traffic to plain workers and actors through every agent,
// with a load balancer that follows /readyz (as Kubernetes endpoints do): nothing fails
// anywhere. The draining agent says 503 on /readyz at once, keeps serving for the drain
// delay (requests still routed to it meanwhile, and requests already in flight, are
// answered), hands its actors over, and refuses connections only after that.

const NS = 'drain';
const REGION = 'eu-west';
const DRAIN_DELAY_MS = 2000;

const WORKER = `
export class Counter {
  constructor(state) { this.state = state; }
  async fetch(request) {
    const url = new URL(request.url);
    const s = this.state.storage;
    const n = ((await s.get('count')) ?? 0) + 1;
    await s.put('count', n);
    const ms = Number(url.searchParams.get('ms') ?? 0);
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
    return new Response(String(n));
  }
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === '/plain') {
      await new Promise((r) => setTimeout(r, Number(url.searchParams.get('ms') ?? 20)));
      return new Response('plain');
    }
    return env.COUNTERS.get(env.COUNTERS.idFromName(url.searchParams.get('actor') ?? 'a')).fetch(request);
  },
};`;

interface Failure { agent: string; path: string; error: string }

/** Whether a TCP connection to the port is accepted. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

describe('SIGTERM drain under traffic', () => {
  let cluster: LocalCluster;

  beforeAll(async () => {
    cluster = await LocalCluster.start({
      ...QUICK_FAILOVER, regions: [REGION], agentsPerRegion: 3, drainDelayMs: DRAIN_DELAY_MS,
      // One isolate host per agent: the front, its proxy and a host all drain.
      isolateHosts: 1, agentArgs: ['--isolate-host-spares', '0', '--no-cordon'],
    });
    const kube = new KubeClient(cluster.kubeConfig);
    await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: NS } } });
    await cluster.startOperator('operator');
    const post = (plural: string, kind: string, name: string, spec: Record<string, unknown>) => kube.request('POST', crPath(plural, NS), {
      body: { apiVersion: 'edge.isolates.dev/v1alpha1', kind, metadata: { name, namespace: NS }, spec }, query: { fieldValidation: 'Strict' },
    });
    await post('durableactors', 'DurableActor', 'counters', { workerRef: { name: 'app' }, className: 'Counter', locationHint: REGION, idleTimeoutSeconds: 300 });
    await post('edgeworkers', 'EdgeWorker', 'app', {
      source: { inline: WORKER }, routes: [{ host: 'app.test' }], bindings: { actors: [{ name: 'COUNTERS', actor: 'counters' }] },
    });
    const ready = async (plural: string, name: string) => {
      const o = await kube.request<{ metadata: { generation: number }; status?: { observedGeneration?: number; conditions?: Condition[] } }>('GET', crPath(plural, NS, name));
      return o.status?.observedGeneration === o.metadata.generation && o.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
    };
    await waitFor('worker and actor class Ready', async () => (await ready('edgeworkers', 'app')) && (await ready('durableactors', 'counters')), 60_000, 200);
    for (const a of cluster.agents) await waitFor(`app served on ${a.node}`, async () => (await get(a, 'app.test', '/plain')).status === 200, 30_000, 100);
  }, 300_000);

  afterAll(async () => { await cluster?.stop(); });

  it('fails no call anywhere, and the draining port answers for the drain delay after /readyz turned 503', async () => {
    const agents = [...cluster.agents];
    const target = agents[0]!;
    const failures: Failure[] = [];
    let ok = 0;
    // The load balancer: sends to the agents whose /readyz says 200, as endpoints do.
    const inRotation = new Set<LocalAgent>(agents);
    let notReadyAt: number | undefined;
    let balancing = true;
    const balancer = (async () => {
      while (balancing) {
        for (const a of agents) {
          const r = await fetch(`http://127.0.0.1:${a.admin}/readyz`).then((x) => x.status, () => 0);
          if (r === 200) continue;
          if (a === target && notReadyAt === undefined && r === 503) notReadyAt = performance.now();
          inRotation.delete(a);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const call = async (a: LocalAgent, path: string) => {
      try {
        const r = await get(a, 'app.test', path);
        if (r.status === 200) ok++;
        else failures.push({ agent: a.node, path, error: `${r.status} ${r.text.slice(0, 200)}` });
      } catch (err) {
        failures.push({ agent: a.node, path, error: String(err) });
      }
    };
    let running = true;
    let turn = 0;
    const loops = Array.from({ length: 6 }, async (_, i) => {
      while (running) {
        const rotation = [...inRotation];
        const a = rotation[turn++ % rotation.length];
        if (!a) break;
        await call(a, i % 2 === 0 ? `/plain?ms=30` : `/inc?actor=a${turn % 8}`);
      }
    });
    await waitFor('traffic before the drain', async () => ok >= 100, 60_000, 50);

    // Requests in flight on the draining agent when SIGTERM comes: a plain worker and an
    // actor call (on whichever agent owns it) that outlast the drain delay.
    const inflight = [call(target, `/plain?ms=${DRAIN_DELAY_MS + 1000}`), call(target, `/inc?actor=slow&ms=${DRAIN_DELAY_MS + 1000}`)];
    await new Promise((r) => setTimeout(r, 200));

    // Connections to the draining port, probed until the first is refused.
    let refusedAt: number | undefined;
    const probe = (async () => {
      while (refusedAt === undefined) {
        if (!(await accepts(target.port))) refusedAt = performance.now();
        else await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const sigterm = performance.now();
    const exited = target.proc.stop(60_000);
    // A request sent after readiness turned 503 (before the balancer noticed) is served too.
    let gone = false;
    void exited.then(() => { gone = true; });
    await waitFor('readiness 503 (or the exit)', async () => notReadyAt !== undefined || gone, 60_000, 20);
    if (notReadyAt !== undefined) inflight.push(call(target, '/plain'), call(target, '/inc?actor=late'));
    await exited;
    const drainMs = performance.now() - sigterm;
    await probe;
    await Promise.all(inflight);
    await waitFor('traffic after the drain', async () => ok >= 400, 60_000, 50);
    running = false;
    balancing = false;
    await Promise.all([...loops, balancer]);

    process.stdout.write(`drain: ${Math.round(drainMs)} ms from SIGTERM to exit (delay ${DRAIN_DELAY_MS} ms); ${ok} calls ok, ${failures.length} failed; port refused ${notReadyAt === undefined ? 'with readiness never 503' : `${Math.round(refusedAt! - notReadyAt)} ms after readiness 503`}\n`);
    expect(failures).toEqual([]);
    expect(notReadyAt, 'readiness turned 503 before the port closed').toBeDefined();
    // The listener closed only after the delay that followed readiness (less one balancer poll).
    expect(refusedAt! - notReadyAt!).toBeGreaterThanOrEqual(DRAIN_DELAY_MS - 150);
    expect(await target.proc.wait()).toBe(0);
  }, 180_000);
});
