import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EDGE_BIN, LocalCluster, QUICK_FAILOVER } from '../../cli/local/cluster.js';
import { waitFor } from '../../cli/local/ports.js';
import { REPO_ROOT } from '../../cli/local/tools.js';
import type { Condition } from '../../common/api/index.js';
import { createLogger } from '../../common/log.js';
import { connect } from 'nats';
import { AgentView } from '../../common/agent-view.js';
import { servesNamespace } from '../../common/isolate-hosts.js';
import { openBuckets } from '../../common/nats.js';
import { Agent } from '../../node-agent/agent.js';
import { PeerTokenError } from '../../node-agent/peer/peer-server.js';
import { crPath, KubeClient } from '../../operator/runtime/kube-client.js';
import { get } from '../harness/http.js';

// Issue 12, item 7: the peer port (agent-to-agent actor calls) against the real agent,
// operator, NATS and apiserver. A tenant tries to change another tenant's actor state
// through it: from its worker (refused by the egress policy before any byte is sent) and
// from the network (no token, a wrong token: 401; the right token with a made-up actor id:
// 400). The victim's balance is what its own requests made it, and it keeps answering.

const REGION = 'eu-west';
const VICTIM = 'bank';
const ATTACKER = 'mallory';

const BANK = `
export class Account {
  constructor(state) { this.state = state; }
  async fetch(request) {
    const url = new URL(request.url);
    const balance = (await this.state.storage.get('balance')) ?? 0;
    if (url.pathname === '/deposit') {
      const next = balance + Number(url.searchParams.get('amount'));
      await this.state.storage.put('balance', next);
      return new Response(String(next));
    }
    return new Response(String(balance));
  }
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const id = env.ACCOUNTS.idFromName(url.searchParams.get('who') ?? 'alice');
    if (url.pathname === '/id') return new Response(id.toString());
    return env.ACCOUNTS.get(id).fetch(request);
  },
};`;

/** Forges a peer call from inside a worker: what another agent would send. */
const FORGER = `export default {
  async fetch(request) {
    const u = new URL(request.url);
    try {
      const res = await fetch(u.searchParams.get('url'), {
        method: 'POST',
        headers: { 'x-edge-url': 'http://bank.test/deposit?amount=1000000', 'x-edge-method': 'GET', 'x-edge-headers': '[]', 'x-edge-peer-token': 'guess' },
      });
      return new Response('reached ' + res.status + ' ' + await res.text());
    } catch (e) {
      return new Response(e.constructor.name + ': ' + e.message, { status: 502 });
    }
  },
};`;

/** A peer call as the network sees it: POST /actors/<ns>/<actor>/<id>. */
function peerCall(port: number, path: string, token?: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1', port, path, method: 'POST', agent: false,
      headers: {
        'x-edge-url': 'http://bank.test/deposit?amount=1000000', 'x-edge-method': 'GET', 'x-edge-headers': '[]', 'x-edge-hops': '1',
        ...(token === undefined ? {} : { 'x-edge-peer-token': token }),
      },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the peer port', () => {
  let cluster: LocalCluster;

  beforeAll(async () => {
    cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: [REGION], operator: { identity: 'operator' } });
    const kube = new KubeClient(cluster.kubeConfig);
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    for (const ns of [VICTIM, ATTACKER]) await core.createNamespace({ body: { metadata: { name: ns } } });
    const post = (ns: string, plural: string, kind: string, name: string, spec: Record<string, unknown>) => kube.request('POST', crPath(plural, ns), {
      body: { apiVersion: 'edge.isolates.dev/v1alpha1', kind, metadata: { name, namespace: ns }, spec }, query: { fieldValidation: 'Strict' },
    });
    await post(VICTIM, 'durableactors', 'DurableActor', 'accounts', { workerRef: { name: 'bank' }, className: 'Account', locationHint: REGION });
    await post(VICTIM, 'edgeworkers', 'EdgeWorker', 'bank', {
      source: { inline: BANK }, routes: [{ host: 'bank.test' }], bindings: { actors: [{ name: 'ACCOUNTS', actor: 'accounts' }] },
    });
    await post(ATTACKER, 'edgeworkers', 'EdgeWorker', 'forger', { source: { inline: FORGER }, routes: [{ host: 'forger.test' }] });
    const ready = async (ns: string, plural: string, name: string) => {
      const o = await kube.request<{ metadata: { generation: number }; status?: { observedGeneration?: number; conditions?: Condition[] } }>('GET', crPath(plural, ns, name));
      return o.status?.observedGeneration === o.metadata.generation && o.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
    };
    await waitFor('workers and the actor class Ready', async () => (await ready(VICTIM, 'edgeworkers', 'bank'))
      && (await ready(VICTIM, 'durableactors', 'accounts')) && (await ready(ATTACKER, 'edgeworkers', 'forger')), 90_000, 200);
    const a = cluster.agent(REGION);
    await waitFor('the bank to answer', async () => (await get(a, 'bank.test', '/deposit?amount=105')).status === 200, 30_000, 200);
  }, 300_000);

  afterAll(async () => { await cluster?.stop(); });

  /** The peer port of the process that serves the victim's namespace (an isolate host of the agent, or the agent itself). */
  const victimPeer = async (): Promise<number> => {
    const nc = await connect(cluster.cp.natsOptions('admin'));
    try {
      const view = new AgentView(await openBuckets(nc), createLogger({}, () => {}, 'error'), { reports: false });
      await view.start();
      try {
        const p = view.agents(REGION).find((x) => x.peerAddress && servesNamespace(x, VICTIM));
        if (!p?.peerAddress) throw new Error('no process serves the victim namespace');
        return Number(new URL(p.peerAddress).port);
      } finally { await view.stop(); }
    } finally { await nc.close(); }
  };

  const balance = async () => (await get(cluster.agent(REGION), 'bank.test', '/balance')).text;

  it('refuses a worker that calls the peer port (egress) and the network without the token (401)', async () => {
    const a = { ...cluster.agent(REGION), peer: await victimPeer() };
    expect(await balance()).toBe('105');
    const id = (await get(a, 'bank.test', '/id')).text;
    const path = `/actors/${VICTIM}/accounts/${id}`;

    const fromWorker = await get(a, 'forger.test', `/?url=${encodeURIComponent(`http://127.0.0.1:${a.peer}${path}`)}`);
    expect(fromWorker.status).toBe(502);
    expect(fromWorker.text).toMatch(new RegExp(`egress to 127\\.0\\.0\\.1:${a.peer} \\(loopback\\) is not allowed by the egress policy of namespace "${ATTACKER}"`));

    expect(await peerCall(a.peer, path)).toEqual({ status: 401, text: 'peer token required\n' });
    expect(await peerCall(a.peer, path, 'guess')).toEqual({ status: 401, text: 'peer token required\n' });
    expect((await peerCall(a.peer, path, `${cluster.peerToken}x`)).status).toBe(401);
    expect(await balance()).toBe('105');
  });

  it('refuses, even with the token, an actor id its DurableActor never made (400)', async () => {
    const a = { ...cluster.agent(REGION), peer: await victimPeer() };
    const madeUp = 'ab'.repeat(32);
    const forged = await peerCall(a.peer, `/actors/${VICTIM}/accounts/${madeUp}`, cluster.peerToken);
    expect(forged.status).toBe(400);
    expect(forged.text).toContain(`is not an id of DurableActor ${VICTIM}/accounts`);
    // A real id with one character of its tag changed is made up too.
    const id = (await get(a, 'bank.test', '/id')).text;
    const altered = `${id.slice(0, 63)}${id[63] === '0' ? '1' : '0'}`;
    expect((await peerCall(a.peer, `/actors/${VICTIM}/accounts/${altered}`, cluster.peerToken)).status).toBe(400);
    // The healthy tenant keeps answering, and nothing the attacker sent was applied.
    expect(await balance()).toBe('105');
    expect((await get(a, 'bank.test', '/deposit?amount=1')).text).toBe('106');
  });

  it('is never open: an agent in NATS mode will not start without a peer token', async () => {
    await expect(Agent.start({
      log: createLogger({}, () => {}),
      source: { kind: 'nats', url: cluster.cp.natsUrl, region: REGION, node: 'no-token' },
      agentName: 'no-token',
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      peerListen: { host: '127.0.0.1', port: 0 },
      presenceTtlMs: 1_000,
      actorLogReplicas: 1,
      maxBodyBytes: 1024,
      maxWebSocketMessageBytes: 1024,
      poolSize: 1,
    })).rejects.toBeInstanceOf(PeerTokenError);
    const env = { ...process.env };
    delete env.EDGE_PEER_TOKEN;
    const child = spawn(process.execPath, ['--no-node-snapshot', EDGE_BIN, 'agent', '--nats', cluster.cp.natsUrl, '--region', REGION, '--node', 'no-token'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect(code).toBe(2);
    expect(stderr).toContain('--nats needs $EDGE_PEER_TOKEN');
  });
});
