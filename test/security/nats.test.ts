import { request } from 'node:https';
import { readFileSync } from 'node:fs';
import { CoreV1Api } from '@kubernetes/client-node';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EdgeWorker } from '../../common/api/index.js';
import { workerKey } from '../../common/keys.js';
import { ACTOR_SUBJECTS, ACTORS_BUCKET, AGENTS_BUCKET, BUNDLES_BUCKET, encodeJson, openBuckets, SUBJECTS, WORKERS_BUCKET, type EdgeBuckets, type WorkerConfig } from '../../common/nats.js';
import { decodeJson, WorkerConfigSchema } from '../../common/nats-messages.js';
import { sha256Digest } from '../../common/resolve-bindings.js';
import { LocalCluster, QUICK_FAILOVER } from '../../cli/local/cluster.js';
import { waitFor } from '../../cli/local/ports.js';
import { crPath, KubeClient } from '../../operator/runtime/kube-client.js';
import { get } from '../harness/http.js';

// Issue 12, items 9 and 12: NATS is not a public bus, and etcd is not open on loopback.
// A real cluster (etcd, kube-apiserver, nats-server, `edge operator`, one `edge agent`)
// from cli/local/. The attacker is anything that reaches NATS or etcd without the
// credentials the cluster gave its own components (any pod; in `edge dev`, a worker on the
// same loopback), or with the agents' shared credential (a compromised agent). A healthy
// neighbour worker on the same agent answers before and after every attack.

const NS = 'tenant';
const REGION = 'eu-west';
const SECRET_VALUE = 'hunter2-do-not-leak-6a1f';

const respond = (text: string) => `export default { async fetch(request, env) { return new Response(${JSON.stringify(text)} + (env.TOKEN ? ' token=' + env.TOKEN : '')); } };`;

/** The server refused a publish (nats.js fails the request with the server's -ERR). */
async function denied(p: Promise<unknown>): Promise<void> {
  expect(await refused(p)).toMatch(/^'?Permissions Violation for Publish to /);
}

/** Rejects (or times out). */
async function refused(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as Error).message || String(err);
  }
  throw new Error('the operation succeeded; it should have been refused');
}

describe('NATS authentication and permissions, etcd client certificates', () => {
  let cluster: LocalCluster;
  let kube: KubeClient;
  /** Allowed everything (the control plane's admin): plays the attacker who got that far, and reads what is stored. */
  let admin: NatsConnection;
  let buckets: EdgeBuckets;

  const create = (name: string, spec: Record<string, unknown>) => kube.request('POST', crPath('edgeworkers', NS), {
    body: { apiVersion: 'edge.isolates.dev/v1alpha1', kind: 'EdgeWorker', metadata: { name, namespace: NS }, spec },
  });
  const ready = (name: string) => waitFor(`${name} Ready`, async () => {
    const ew = await kube.request<EdgeWorker>('GET', crPath('edgeworkers', NS, name));
    return ew.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True' && c.observedGeneration === ew.metadata.generation) ?? false;
  }, 60_000, 100);
  const answer = (host: string) => get(cluster.agent(REGION), host);
  const neighbourAnswers = async () => expect(await answer('neighbour.test')).toEqual({ status: 200, text: 'neighbour ok' });
  const config = async (name: string): Promise<{ raw: string; cfg: WorkerConfig; revision: number }> => {
    const e = await buckets.workers.get(workerKey(NS, name));
    if (!e || e.operation !== 'PUT') throw new Error(`no config for ${name}`);
    return { raw: e.string(), cfg: decodeJson(WorkerConfigSchema, e.value, name), revision: e.revision };
  };
  const as = (role: 'agent' | 'logs' | 'operator') => connect({ ...cluster.cp.natsOptions(role), name: `attacker as ${role}` });

  beforeAll(async () => {
    cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: [REGION], operator: { identity: 'operator-a' } });
    kube = new KubeClient(cluster.kubeConfig);
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: NS } } });
    await core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 'creds' }, stringData: { token: SECRET_VALUE } } });
    admin = await connect(cluster.cp.natsOptions('admin'));
    buckets = await openBuckets(admin);
    await create('neighbour', { source: { inline: 'export default { fetch() { return new Response("neighbour ok"); } };' }, routes: [{ host: 'neighbour.test' }] });
    await create('victim', {
      source: { inline: respond('victim ok') }, routes: [{ host: 'victim.test' }],
      bindings: { secrets: [{ name: 'TOKEN', secretKeyRef: { name: 'creds', key: 'token' } }] },
    });
    await Promise.all([ready('neighbour'), ready('victim')]);
    await neighbourAnswers();
  }, 240_000);

  afterAll(async () => {
    await admin?.close();
    await cluster?.stop();
  });

  it('refuses a connection without credentials, or with a wrong password', async () => {
    const anonymous = await refused(connect({ servers: cluster.cp.natsUrl, maxReconnectAttempts: 0 }));
    expect(anonymous).toMatch(/authorization violation/i);
    const wrong = await refused(connect({ servers: cluster.cp.natsUrl, user: cluster.cp.natsCredentials.agent.user, pass: 'guess', maxReconnectAttempts: 0 }));
    expect(wrong).toMatch(/authorization violation/i);
    await neighbourAnswers();
  });

  it('lets an agent read desired state and write its own kinds of state, nothing more', async () => {
    const nc = await as('agent');
    try {
      const js = nc.jetstream({ timeout: 2000 });
      const workers = await js.views.kv(WORKERS_BUCKET, { bindOnly: true });
      // Reading is what agents do.
      expect((await workers.get(workerKey(NS, 'victim')))?.operation).toBe('PUT');
      // Presence is theirs to write.
      const agents = await js.views.kv(AGENTS_BUCKET, { bindOnly: true });
      await agents.put('eu-west.probe', encodeJson({ probe: true }));
      await agents.delete('eu-west.probe');

      // Rewriting a worker's config (to serve the attacker's code) is refused...
      const { raw: before } = await config('victim');
      expect(await refused(workers.put(workerKey(NS, 'victim'), new TextEncoder().encode(before.replace('victim', 'evil')))))
        .toContain(`Permissions Violation for Publish to "$KV.${WORKERS_BUCKET}.${NS}.victim"`);
      await denied(workers.delete(workerKey(NS, 'victim')));
      // ... and so are actor configs, bundles, and any change to the streams behind them.
      const actorConfigs = await js.views.kv(ACTORS_BUCKET, { bindOnly: true });
      await denied(actorConfigs.put(`${NS}.forged`, encodeJson({})));
      const jsm = await nc.jetstreamManager({ timeout: 2000 });
      await denied(jsm.streams.purge(`KV_${WORKERS_BUCKET}`));
      await denied(jsm.streams.delete(`KV_${WORKERS_BUCKET}`));
      await denied(jsm.streams.update(`KV_${WORKERS_BUCKET}`, { subjects: [`$KV.${WORKERS_BUCKET}.>`, 'edge.attacker.>'] }));
      await denied(jsm.streams.add({ name: 'ATTACKER', subjects: ['edge.attacker.>'] }));
      await denied(js.publish(`$O.${BUNDLES_BUCKET}.C.forged`, new TextEncoder().encode('export default {}')));
      // A forged actor commit can go only where actor logs live: not into any other stream.
      await denied(js.publish(`$KV.${WORKERS_BUCKET}.${NS}.victim`, encodeJson({ balance: 31337 })));
      expect(ACTOR_SUBJECTS.stream.every((s) => s.startsWith('edge.actor.'))).toBe(true);
      expect(await config('victim').then((c) => c.raw)).toBe(before);
    } finally {
      await nc.close();
    }
    await neighbourAnswers();
  });

  it('keeps other tenants\' console lines and other roles\' replies from an agent', async () => {
    const nc = await as('agent');
    try {
      for (const subject of [SUBJECTS.logsAll, SUBJECTS.logs(NS, 'victim'), '_INBOX.>', '_INBOX_edge_operator.>', '$KV.>']) {
        const sub = nc.subscribe(subject);
        const err = await refused((async () => { for await (const m of sub) void m; })());
        expect(err, subject).toMatch(/permissions violation for subscription/i);
      }
    } finally {
      await nc.close();
    }
    // The `edge logs` credential reads logs and writes nothing.
    const logs = await as('logs');
    try {
      const js = logs.jetstream({ timeout: 2000 });
      await denied(js.publish(ACTOR_SUBJECTS.log(NS, 'counter', 'a'.repeat(64)), encodeJson({ balance: 31337 })));
      await denied(js.publish(`$KV.${AGENTS_BUCKET}.eu-west.fake`, encodeJson({})));
    } finally {
      await logs.close();
    }
    await neighbourAnswers();
  });

  it('keeps Secret values out of NATS in clear, and the worker still gets them', async () => {
    const { raw, cfg } = await config('victim');
    expect(raw).not.toContain(SECRET_VALUE);
    expect(raw).not.toContain(Buffer.from(SECRET_VALUE).toString('base64'));
    expect(Object.keys(cfg.env.sealed)).toEqual(['TOKEN']);
    expect(cfg.env.text.TOKEN).toBeUndefined();
    expect(await answer('victim.test')).toEqual({ status: 200, text: `victim ok token=${SECRET_VALUE}` });
    await neighbourAnswers();
  });

  it('restores a worker config rewritten behind the operator\'s back, and removes a forged one', async () => {
    const { raw: good, cfg } = await config('victim');
    // The attacker's code, uploaded as a bundle, and the victim's config pointed at it.
    const evil = 'export default { fetch() { return new Response("pwned"); } };';
    const digest = sha256Digest(evil);
    await buckets.bundles.putBlob({ name: digest }, new TextEncoder().encode(evil));
    const forged: WorkerConfig = { ...cfg, bundleDigest: digest, version: sha256Digest(`forged ${Date.now()}`), env: { ...cfg.env, sealed: {} } };
    await buckets.workers.put(workerKey(NS, 'victim'), encodeJson(forged));
    await buckets.workers.put(workerKey(NS, 'ghost'), encodeJson({ ...forged, name: 'ghost', routes: [{ host: 'ghost.test', pathPrefix: '/' }] }));

    await waitFor('the operator restores the victim config', async () => (await config('victim')).raw === good, 30_000, 100);
    await waitFor('the operator removes the forged key', async () => {
      const e = await buckets.workers.get(workerKey(NS, 'ghost'));
      return !e || e.operation !== 'PUT';
    }, 30_000, 100);
    await waitFor('the agent serves the victim\'s own code again', async () => (await answer('victim.test')).text === `victim ok token=${SECRET_VALUE}`, 30_000, 100);
    expect((await answer('ghost.test')).status).toBe(404);

    // A deleted config comes back too.
    await buckets.workers.purge(workerKey(NS, 'victim'));
    await waitFor('the operator rewrites a deleted config', async () => (await config('victim').catch(() => undefined))?.raw === good, 30_000, 100);
    await waitFor('the victim answers', async () => (await answer('victim.test')).status === 200, 30_000, 100);
    await neighbourAnswers();
  });

  it('removes a forged actor config no DurableActor owns', async () => {
    await buckets.actors.put(`${NS}.ghost`, encodeJson({ forged: true }));
    await waitFor('the operator purges the forged actor config', async () => {
      const e = await buckets.actors.get(`${NS}.ghost`);
      return !e || e.operation !== 'PUT';
    }, 30_000, 100);
    await neighbourAnswers();
  });

  it('refuses an etcd client without a certificate signed by etcd\'s CA (edge dev, item 12)', async () => {
    const health = (opts: { cert?: Buffer; key?: Buffer }) => new Promise<number>((resolve, reject) => {
      const req = request(`${cluster.cp.etcdUrl}/v3/kv/range`, {
        method: 'POST', ca: readFileSync(cluster.cp.etcdTls.ca), ...opts, timeout: 5000,
      }, (res) => { res.resume(); resolve(res.statusCode ?? 0); });
      req.on('error', reject);
      req.end(JSON.stringify({ key: Buffer.from('/registry/secrets/').toString('base64'), range_end: Buffer.from('/registry/secrets0').toString('base64') }));
    });
    const noCert = await refused(health({}));
    expect(noCert).toMatch(/certificate|alert|socket hang up|ECONNRESET/i);
    // Plain HTTP gets nothing either.
    const plain = await refused(fetch(cluster.cp.etcdUrl.replace('https:', 'http:') + '/v3/kv/range', { method: 'POST', body: '{}' }).then(async (r) => {
      if (!r.ok) throw new Error(`status ${r.status}`);
      return r.text();
    }));
    expect(plain).toBeTruthy();
    // The apiserver's client certificate is what works (the test would pass vacuously otherwise).
    expect(await health({ cert: readFileSync(cluster.cp.etcdTls.cert), key: readFileSync(cluster.cp.etcdTls.key) })).toBe(200);
    await neighbourAnswers();
  });
});
