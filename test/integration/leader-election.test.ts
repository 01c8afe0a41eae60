import { createServer, connect, type Server, type Socket } from 'node:net';
import { CoordinationV1Api, KubeConfig, V1MicroTime, type V1Lease } from '@kubernetes/client-node';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/log.js';
import { LeaderElector, type LeaderElectionOptions } from '../../operator/runtime/leader-election.js';
import { waitFor } from '../../cli/local/ports.js';
import { freshNamespace, sharedControlPlane } from '../harness/shared.js';

// Leader election against the real apiserver, several electors in one process with short
// durations. A sampler reads every elector's isLeader every 10 ms for the whole test and
// records any moment with two leaders; every test ends by asserting there was none.
// Timing asserts are one-sided and generous (the machine is shared): they tell "waited
// for the lease to expire" from "took over at once", nothing finer.

const FAST = { leaseDurationMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 200 };

interface Candidate {
  id: string;
  le: LeaderElector;
  started: number;
  stopped: number;
  startedAt?: number;
  stoppedAt?: number;
  newLeaders: string[];
}

const { kubeConfig: kc } = sharedControlPlane();
const coord = kc.makeApiClient(CoordinationV1Api);
let ns: string;
beforeAll(async () => { ns = await freshNamespace(kc, 'leader'); });

const logLines: Record<string, unknown>[] = [];
const log = createLogger({}, (l) => {
  logLines.push(JSON.parse(l) as Record<string, unknown>);
  if (process.env.EDGE_TEST_LOGS === '1') process.stderr.write(l);
}, 'debug');

const candidates: Candidate[] = [];
let sampler: NodeJS.Timeout | undefined;
let violations: string[] = [];
let samples = 0;

function candidate(id: string, lease: string, opts: Partial<LeaderElectionOptions> = {}): Candidate {
  const state: Omit<Candidate, 'le'> = { id, started: 0, stopped: 0, newLeaders: [] };
  const le = new LeaderElector({
    kc, namespace: ns, name: lease, identity: id, log: log.child({ candidate: id }), ...FAST,
    onStartedLeading: () => { state.started++; state.startedAt = Date.now(); },
    onStoppedLeading: () => { state.stopped++; state.stoppedAt = Date.now(); },
    onNewLeader: (who) => { state.newLeaders.push(who); },
    ...opts,
  });
  const c: Candidate = Object.assign(state, { le });
  candidates.push(c);
  return c;
}

/** Starts sampling all candidates created so far (and later ones) for two leaders at once. */
function startSampler(): void {
  sampler = setInterval(() => {
    samples++;
    const leaders = candidates.filter((c) => c.le.isLeader).map((c) => c.id);
    if (leaders.length > 1) violations.push(`${new Date().toISOString()}: ${leaders.join(', ')}`);
  }, 10);
}

afterEach(async () => {
  clearInterval(sampler);
  sampler = undefined;
  await Promise.all(candidates.splice(0).map((c) => c.le.stop()));
  violations = [];
  samples = 0;
});

const leaders = (): Candidate[] => candidates.filter((c) => c.le.isLeader);
async function waitForLeader(what: string, timeoutMs = 15_000): Promise<Candidate> {
  await waitFor(what, async () => leaders().length === 1, timeoutMs, 10);
  return leaders()[0]!;
}
const readLease = (name: string): Promise<V1Lease> => coord.readNamespacedLease({ name, namespace: ns });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
function expectNeverTwoLeaders(): void {
  expect(samples).toBeGreaterThan(10);
  expect(violations).toEqual([]);
}

describe('LeaderElector', () => {
  it('elects exactly one of three, names it in the Lease, and keeps it while it renews', async () => {
    startSampler();
    const cs = ['a', 'b', 'c'].map((id) => candidate(`stable-${id}`, 'stable'));
    await Promise.all(cs.map((c) => c.le.start()));
    const leader = await waitForLeader('a leader');
    // Many renew periods (200 ms) and more than two lease durations.
    await sleep(4000);
    expect(leaders().map((c) => c.id)).toEqual([leader.id]);
    expect(leader.started).toBe(1);
    expect(leader.stopped).toBe(0);
    for (const c of cs) {
      if (c !== leader) expect(c.started).toBe(0);
      expect(c.le.leader).toBe(leader.id);
      expect(c.newLeaders).toEqual([leader.id]);
    }
    const lease = await readLease('stable');
    expect(lease.spec?.holderIdentity).toBe(leader.id);
    expect(lease.spec?.leaseTransitions).toBe(0);
    expect(lease.spec?.leaseDurationSeconds).toBe(2);
    // renewTime was written recently (read as text: the typed client does not parse MicroTime).
    expect(String(lease.spec?.renewTime)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expectNeverTwoLeaders();
  });

  it('replaces a leader that stops without releasing only after the lease duration', async () => {
    startSampler();
    const cs = [candidate('crash-a', 'crash'), candidate('crash-b', 'crash')];
    await Promise.all(cs.map((c) => c.le.start()));
    const old = await waitForLeader('a first leader');
    const successor = cs.find((c) => c !== old)!;
    await sleep(500);
    const t0 = Date.now();
    await old.le.stop();
    expect(old.le.isLeader).toBe(false);
    expect(old.stopped).toBe(1);
    const next = await waitForLeader('the successor');
    const tookMs = Date.now() - t0;
    expect(next).toBe(successor);
    // The follower waits out leaseDurationSeconds (2 s: 1500 ms rounded up) from the last
    // change it saw, at most one renew period before the stop.
    expect(tookMs).toBeGreaterThanOrEqual(1000);
    expect(tookMs).toBeLessThan(15_000);
    const lease = await readLease('crash');
    expect(lease.spec?.holderIdentity).toBe(successor.id);
    expect(lease.spec?.leaseTransitions).toBe(1);
    expect(successor.newLeaders).toEqual([old.id, successor.id]);
    expectNeverTwoLeaders();
  });

  it('hands over at once on release, long before the lease would expire', async () => {
    startSampler();
    // A 6 s lease: a successor that waited it out would take over 6 s after the release.
    const slow = { leaseDurationMs: 6000, renewDeadlineMs: 4000, retryPeriodMs: 200 };
    const cs = [candidate('release-a', 'release', slow), candidate('release-b', 'release', slow)];
    await Promise.all(cs.map((c) => c.le.start()));
    const old = await waitForLeader('a first leader');
    const successor = cs.find((c) => c !== old)!;
    await sleep(500);
    const t0 = Date.now();
    await old.le.release();
    expect(old.stopped).toBe(1);
    await waitForLeader('the successor');
    const tookMs = Date.now() - t0;
    expect(successor.le.isLeader).toBe(true);
    expect(tookMs).toBeLessThan(3000);
    const lease = await readLease('release');
    expect(lease.spec?.holderIdentity).toBe(successor.id);
    expect(lease.spec?.leaseTransitions).toBe(1);
    expectNeverTwoLeaders();
  });

  it('counts transitions across several takeovers', async () => {
    startSampler();
    const a = candidate('count-a', 'count');
    await a.le.start();
    await waitForLeader('a');
    const b = candidate('count-b', 'count');
    await b.le.start();
    await a.le.release();
    await waitFor('b leads', async () => b.le.isLeader, 15_000, 10);
    const c = candidate('count-c', 'count');
    await c.le.start();
    await b.le.release();
    await waitFor('c leads', async () => c.le.isLeader, 15_000, 10);
    expect((await readLease('count')).spec?.leaseTransitions).toBe(2);
    expectNeverTwoLeaders();
  });

  it('steps down within the renew deadline when cut off from the apiserver, before anyone takes over', async () => {
    const proxy = await blackholeProxy(kc);
    try {
      startSampler();
      const cut = candidate('cut-a', 'cut', { kc: proxy.kc });
      await cut.le.start();
      await waitForLeader('the proxied candidate to lead');
      const other = candidate('cut-b', 'cut');
      await other.le.start();
      await sleep(600);
      expect(cut.le.isLeader).toBe(true);

      const t0 = Date.now();
      proxy.block();
      await waitFor('the cut-off leader to step down', async () => cut.stopped === 1, 10_000, 10);
      // Deadline = last successful renewal (before t0) + 1000 ms; generous slack for timers.
      expect(cut.stoppedAt! - t0).toBeLessThan(3000);
      expect(cut.le.isLeader).toBe(false);
      expect(logLines.some((l) => l.candidate === 'cut-a' && l.msg === 'lost leadership' && /no successful renewal/.test(String(l.reason)))).toBe(true);

      await waitFor('the other candidate to take over', async () => other.le.isLeader, 15_000, 10);
      expect(other.startedAt!).toBeGreaterThanOrEqual(cut.stoppedAt!);
      // The loser does not compete again, even once the apiserver is reachable.
      proxy.unblock();
      await sleep(1500);
      expect(cut.started).toBe(1);
      expect(cut.le.isLeader).toBe(false);
      expect((await readLease('cut')).spec?.holderIdentity).toBe('cut-b');
      expectNeverTwoLeaders();
    } finally {
      await proxy.close();
    }
  });

  it('renews over one kept-alive connection, not a TLS handshake per request', async () => {
    // client-node's typed clients make a new https.Agent per request: at the bench's 250 ms
    // retry period that was eight TLS handshakes a second, on the operator and the apiserver.
    const proxy = await blackholeProxy(kc);
    try {
      const c = candidate('kept', 'kept', { kc: proxy.kc });
      await c.le.start();
      await waitForLeader('it leads');
      const linesBefore = logLines.length;
      await sleep(2000);
      // ~10 renewals of two requests each in those 2 s (retry period 200 ms).
      expect(c.le.isLeader).toBe(true);
      expect(logLines.slice(linesBefore).filter((l) => l.candidate === 'kept' && l.level !== 'debug')).toEqual([]);
      expect(proxy.connections()).toBeLessThanOrEqual(2);
    } finally {
      await proxy.close();
    }
  });

  it('steps down at once when the Lease names someone else', async () => {
    startSampler();
    // A 4 s renew deadline: stepping down well before it shows the new holder was noticed,
    // not merely that renewals failed.
    const c = candidate('usurped', 'usurp', { leaseDurationMs: 6000, renewDeadlineMs: 4000, retryPeriodMs: 200 });
    await c.le.start();
    await waitForLeader('it leads');
    const lease = await readLease('usurp');
    const now = new V1MicroTime();
    const t0 = Date.now();
    await coord.replaceNamespacedLease({
      name: 'usurp', namespace: ns,
      body: { metadata: { name: 'usurp', namespace: ns, resourceVersion: lease.metadata?.resourceVersion }, spec: { ...lease.spec, holderIdentity: 'intruder', renewTime: now, acquireTime: now } },
    });
    await waitFor('it to step down', async () => c.stopped === 1, 10_000, 10);
    expect(c.stoppedAt! - t0).toBeLessThan(2500);
    expect(c.le.isLeader).toBe(false);
    expect(c.le.leader).toBe('intruder');
    expect(c.newLeaders).toEqual(['usurped', 'intruder']);
  });

  it('judges an existing Lease by its own clock, not by the renewTime written in it', async () => {
    // A record renewed "an hour ago" by a holder that is gone: a candidate seeing it for
    // the first time still waits a full lease duration, because remote timestamps cannot
    // be trusted against the local clock.
    const hourAgo = new V1MicroTime(Date.now() - 3600_000);
    await coord.createNamespacedLease({
      namespace: ns,
      body: { metadata: { name: 'stale' }, spec: { holderIdentity: 'ghost', leaseDurationSeconds: 1, renewTime: hourAgo, acquireTime: hourAgo, leaseTransitions: 5 } },
    });
    startSampler();
    const c = candidate('stale-taker', 'stale');
    const t0 = Date.now();
    await c.le.start();
    expect(c.le.isLeader).toBe(false);
    expect(c.le.leader).toBe('ghost');
    await waitFor('it to take over', async () => c.le.isLeader, 15_000, 10);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    const lease = await readLease('stale');
    expect(lease.spec?.holderIdentity).toBe('stale-taker');
    expect(lease.spec?.leaseTransitions).toBe(6);
  });

  it('refuses settings that would allow two leaders', () => {
    const base = { kc, namespace: 'x', name: 'x', identity: 'x', log, onStartedLeading: () => {}, onStoppedLeading: () => {} };
    expect(() => new LeaderElector({ ...base, leaseDurationMs: 1000, renewDeadlineMs: 1000 })).toThrow(/leaseDurationMs/);
    expect(() => new LeaderElector({ ...base, renewDeadlineMs: 1000, retryPeriodMs: 1000 })).toThrow(/retryPeriodMs/);
    expect(() => new LeaderElector({ ...base, identity: '' })).toThrow(/identity/);
  });
});

/**
 * A TCP proxy to the apiserver that can be switched into a black hole: block() cuts the
 * open connections and leaves new ones hanging unanswered, like a network partition.
 */
async function blackholeProxy(target: KubeConfig): Promise<{ kc: KubeConfig; connections(): number; block(): void; unblock(): void; close(): Promise<void> }> {
  const cluster = target.getCurrentCluster();
  if (!cluster) throw new Error('no current cluster');
  const upstream = new URL(cluster.server);
  let blocked = false;
  let accepted = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    accepted++;
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    if (blocked) return;
    const up = connect(Number(upstream.port), upstream.hostname);
    sockets.add(up);
    up.on('close', () => { sockets.delete(up); client.destroy(); });
    up.on('error', () => up.destroy());
    client.on('close', () => up.destroy());
    client.pipe(up);
    up.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('proxy has no port');
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: target.getClusters().map((c) => ({ ...c, server: `https://127.0.0.1:${addr.port}` })),
    users: target.getUsers(),
    contexts: target.getContexts(),
    currentContext: target.getCurrentContext(),
  });
  return {
    kc,
    connections: () => accepted,
    block: () => { blocked = true; for (const s of sockets) s.destroy(); },
    unblock: () => { blocked = false; },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
