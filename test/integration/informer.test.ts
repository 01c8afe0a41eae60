import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions, type V1ConfigMap } from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, type Logger } from '../../common/log.js';
import { Informer, type InformerOptions, type KubeObject } from '../../operator/runtime/informer.js';
import { waitFor } from '../../cli/local/ports.js';
import { freshNamespace, sharedControlPlane } from '../harness/shared.js';

// The informer against the real apiserver (list, watch, server-closed watches, paging,
// many rapid changes) and against a scripted apiserver on loopback for what a real one
// will not do on demand (410 Gone as an event and as a status, 5xx on list and watch,
// an expired continue token).

interface ConfigMap extends KubeObject { data?: Record<string, string> }

// client-node 1.x sends PATCH bodies as JSON Patch unless told otherwise.
const MERGE = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** A logger that keeps its lines for assertions (and echoes them with EDGE_TEST_LOGS=1). */
function captureLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({}, (l) => {
    lines.push(JSON.parse(l) as Record<string, unknown>);
    if (process.env.EDGE_TEST_LOGS === '1') process.stderr.write(l);
  }, 'debug');
  return { log, lines };
}

/** Records events and mirrors the cache from events alone, to prove none were missed. */
function recorder<T extends KubeObject>(inf: Informer<T>) {
  const events: { type: 'add' | 'update' | 'delete'; key: string; rv?: string; oldRv?: string; obj: T }[] = [];
  const mirror = new Map<string, T>();
  inf.on('add', (o) => { events.push({ type: 'add', key: inf.key(o), rv: o.metadata.resourceVersion, obj: o }); mirror.set(inf.key(o), o); });
  inf.on('update', (o, old) => {
    events.push({ type: 'update', key: inf.key(o), rv: o.metadata.resourceVersion, oldRv: old?.metadata.resourceVersion, obj: o });
    mirror.set(inf.key(o), o);
  });
  inf.on('delete', (o) => { events.push({ type: 'delete', key: inf.key(o), obj: o }); mirror.delete(inf.key(o)); });
  return { events, mirror };
}

const informers: { stop(): Promise<void> }[] = [];
function track<T extends KubeObject>(inf: Informer<T>): Informer<T> {
  informers.push(inf);
  return inf;
}
afterEach(async () => { await Promise.all(informers.splice(0).map((i) => i.stop())); });

describe('Informer against the real apiserver', () => {
  const { kubeConfig: kc } = sharedControlPlane();
  const core = kc.makeApiClient(CoreV1Api);
  let ns: string;
  beforeAll(async () => { ns = await freshNamespace(kc, 'informer'); });

  const cm = (name: string, data: Record<string, string> = {}, labels: Record<string, string> = {}): V1ConfigMap => ({
    metadata: { name, labels: { suite: 'informer', ...labels } }, data,
  });
  const newInformer = (opts: Partial<InformerOptions<ConfigMap>> & { log: Logger; namespace?: string }): Informer<ConfigMap> => track(new Informer<ConfigMap>({
    kc, path: `/api/v1/namespaces/${opts.namespace ?? ns}/configmaps`, name: 'configmaps', ...opts,
  }));
  /** What the apiserver holds now, as name -> data. */
  const serverState = async (namespace: string): Promise<Map<string, Record<string, string>>> => {
    const list = await core.listNamespacedConfigMap({ namespace });
    return new Map(list.items.map((c) => [c.metadata!.name!, c.data ?? {}]));
  };
  const cacheState = (objs: ConfigMap[]): Map<string, Record<string, string>> => new Map(objs.map((c) => [c.metadata.name, c.data ?? {}]));

  it('lists what exists, then sees add, update and delete', async () => {
    const namespace = await freshNamespace(kc, 'inf-basic');
    await core.createNamespacedConfigMap({ namespace, body: cm('before', { v: '0' }) });
    const { log } = captureLog();
    const inf = newInformer({ log, namespace });
    const { events } = recorder(inf);
    expect(inf.hasSynced).toBe(false);
    await inf.start();
    expect(inf.hasSynced).toBe(true);
    expect(inf.get(namespace, 'before')?.data).toEqual({ v: '0' });
    expect(inf.get(namespace, 'before')?.kind).toBe('ConfigMap');
    expect(inf.get(namespace, 'before')?.apiVersion).toBe('v1');
    expect(events.map((e) => [e.type, e.key])).toEqual([['add', `${namespace}/before`]]);

    await core.createNamespacedConfigMap({ namespace, body: cm('a', { v: '1' }) });
    await waitFor('add of a', async () => inf.get(namespace, 'a') !== undefined, 15_000);
    const created = inf.get(namespace, 'a')!;
    await core.replaceNamespacedConfigMap({ name: 'a', namespace, body: { ...cm('a', { v: '2' }), metadata: { ...cm('a').metadata, resourceVersion: created.metadata.resourceVersion } } });
    await waitFor('update of a', async () => inf.get(namespace, 'a')?.data?.v === '2', 15_000);
    await core.deleteNamespacedConfigMap({ name: 'a', namespace });
    await waitFor('delete of a', async () => inf.get(namespace, 'a') === undefined, 15_000);

    const forA = events.filter((e) => e.key === `${namespace}/a`);
    expect(forA.map((e) => e.type)).toEqual(['add', 'update', 'delete']);
    expect(forA[1]!.oldRv).toBe(created.metadata.resourceVersion);
    expect((forA[1]!.obj).data).toEqual({ v: '2' });
    expect(inf.list(namespace).map((c) => c.metadata.name)).toEqual(['before']);
    expect(inf.list('elsewhere')).toEqual([]);
    expect(inf.key(inf.get(namespace, 'before')!)).toBe(`${namespace}/before`);
  });

  it('misses nothing across watches the server closes, and matches the server after many rapid changes', async () => {
    const namespace = await freshNamespace(kc, 'inf-churn');
    const { log } = captureLog();
    // 1-2 s server-side watch timeouts: the watch is closed and re-opened many times
    // while the changes below are in flight.
    const inf = newInformer({ log, namespace, watchTimeoutSeconds: 1 });
    const { events, mirror } = recorder(inf);
    await inf.start();

    const deadline = Date.now() + 8000;
    let round = 0;
    while (Date.now() < deadline) {
      const ops: Promise<unknown>[] = [];
      for (let i = 0; i < 5; i++) ops.push(core.createNamespacedConfigMap({ namespace, body: cm(`c${round}-${i}`, { round: String(round) }) }));
      if (round > 0) {
        // Rewrite one of the last round's objects and delete another, in parallel with creates.
        ops.push(core.patchNamespacedConfigMap({ name: `c${round - 1}-0`, namespace, body: { data: { round: String(round), patched: 'yes' } } }, MERGE));
        ops.push(core.deleteNamespacedConfigMap({ name: `c${round - 1}-1`, namespace }));
      }
      await Promise.all(ops);
      round++;
      await new Promise((r) => setTimeout(r, 100));
    }
    const want = await serverState(namespace);
    expect(want.size).toBeGreaterThan(20);
    await waitFor('cache to match the server', async () => JSON.stringify([...cacheState(inf.list(namespace))].sort()) === JSON.stringify([...want].sort()), 20_000);
    // The mirror is built only from events: equal to the server means no event was lost.
    expect([...cacheState([...mirror.values()])].sort()).toEqual([...want].sort());
    expect(inf.stats.watches).toBeGreaterThanOrEqual(4);
    expect(inf.stats.lists).toBe(1);
    expect(events.filter((e) => e.type === 'delete').length).toBe(round - 1);
  });

  it('converges after a burst of concurrent changes, with small list pages', async () => {
    const namespace = await freshNamespace(kc, 'inf-burst');
    const { log } = captureLog();
    const live = newInformer({ log, namespace });
    await live.start();
    const names = Array.from({ length: 60 }, (_, i) => `burst-${i}`);
    for (let i = 0; i < names.length; i += 20) {
      await Promise.all(names.slice(i, i + 20).map((n) => core.createNamespacedConfigMap({ namespace, body: cm(n, { v: '1' }) })));
    }
    await Promise.all(names.slice(0, 30).map((n, i) => core.patchNamespacedConfigMap({ name: n, namespace, body: { data: { v: `2-${i}` } } }, MERGE)));
    await Promise.all(names.slice(40).map((n) => core.deleteNamespacedConfigMap({ name: n, namespace })));
    await Promise.all(names.slice(0, 10).map((n, i) => core.patchNamespacedConfigMap({ name: n, namespace, body: { data: { v: `3-${i}` } } }, MERGE)));
    const want = await serverState(namespace);
    expect(want.size).toBe(40);
    await waitFor('live cache to match the server', async () => JSON.stringify([...cacheState(live.list(namespace))].sort()) === JSON.stringify([...want].sort()), 20_000);

    // A second informer started now lists in pages of 7 (six pages) and sees the same.
    const paged = newInformer({ log, namespace, pageSize: 7 });
    await paged.start();
    expect([...cacheState(paged.list(namespace))].sort()).toEqual([...want].sort());
  });

  it('filters by label selector', async () => {
    const { log } = captureLog();
    const inf = newInformer({ log, labelSelector: 'team=blue' });
    await inf.start();
    await core.createNamespacedConfigMap({ namespace: ns, body: cm('blue-1', {}, { team: 'blue' }) });
    await core.createNamespacedConfigMap({ namespace: ns, body: cm('red-1', {}, { team: 'red' }) });
    await waitFor('blue-1', async () => inf.get(ns, 'blue-1') !== undefined, 15_000);
    // red-1 was created after blue-1... but watch order is not a promise across objects:
    // check after a later blue write has arrived.
    await core.createNamespacedConfigMap({ namespace: ns, body: cm('blue-2', {}, { team: 'blue' }) });
    await waitFor('blue-2', async () => inf.get(ns, 'blue-2') !== undefined, 15_000);
    expect(inf.get(ns, 'red-1')).toBeUndefined();
  });

  it('skips objects that parse rejects, with a warning naming them', async () => {
    const namespace = await freshNamespace(kc, 'inf-parse');
    await core.createNamespacedConfigMap({ namespace, body: cm('bad-before', {}, { shape: 'bad' }) });
    const { log, lines } = captureLog();
    const inf = newInformer({
      log, namespace,
      parse: (raw) => {
        const o = raw as ConfigMap & { metadata: { labels?: Record<string, string> } };
        if (o.metadata.labels?.shape === 'bad') return undefined;
        if (o.metadata.labels?.shape === 'throw') throw new Error('shape is not acceptable');
        return o;
      },
      transform: (o) => ({ ...o, metadata: { ...o.metadata, managedFields: undefined } }),
    });
    const { events } = recorder(inf);
    await inf.start();
    await core.createNamespacedConfigMap({ namespace, body: cm('good', { v: '1' }) });
    await core.createNamespacedConfigMap({ namespace, body: cm('bad', {}, { shape: 'bad' }) });
    await core.createNamespacedConfigMap({ namespace, body: cm('throws', {}, { shape: 'throw' }) });
    await core.createNamespacedConfigMap({ namespace, body: cm('good-after', { v: '1' }) });
    await waitFor('good-after', async () => inf.get(namespace, 'good-after') !== undefined, 15_000);
    expect(inf.list(namespace).map((c) => c.metadata.name).sort()).toEqual(['good', 'good-after']);
    expect(inf.get(namespace, 'good')?.metadata.managedFields).toBeUndefined();
    const warned = (name: string) => lines.some((l) => l.level === 'warn' && l.object === `${namespace}/${name}`);
    expect(warned('bad-before')).toBe(true);
    expect(warned('bad')).toBe(true);
    expect(warned('throws')).toBe(true);
    expect(lines.find((l) => l.object === `${namespace}/throws`)?.error).toBe('shape is not acceptable');
    expect(inf.stats.rejected).toBe(3);

    // A cached object whose new version does not parse leaves the cache (a delete event).
    await core.patchNamespacedConfigMap({ name: 'good', namespace, body: { metadata: { labels: { shape: 'bad' } } } }, MERGE);
    await waitFor('good to leave the cache', async () => inf.get(namespace, 'good') === undefined, 15_000);
    expect(events.filter((e) => e.key === `${namespace}/good`).map((e) => e.type)).toEqual(['add', 'delete']);
    // Deleting an object that never parsed emits nothing.
    await core.deleteNamespacedConfigMap({ name: 'bad', namespace });
    await core.patchNamespacedConfigMap({ name: 'good-after', namespace, body: { data: { v: '2' } } }, MERGE);
    await waitFor('good-after update', async () => inf.get(namespace, 'good-after')?.data?.v === '2', 15_000);
    expect(events.some((e) => e.key === `${namespace}/bad`)).toBe(false);
  });

  it('stop() ends the watch: no events afterwards, and start() after stop() refuses', async () => {
    const namespace = await freshNamespace(kc, 'inf-stop');
    const { log } = captureLog();
    const inf = newInformer({ log, namespace });
    const { events } = recorder(inf);
    await inf.start();
    await inf.stop();
    await core.createNamespacedConfigMap({ namespace, body: cm('late') });
    await new Promise((r) => setTimeout(r, 1000));
    expect(events).toEqual([]);
    await expect(inf.start()).rejects.toThrow(/after stop/);
  });
});

// ---------------------------------------------------------------------------------------
// A scripted apiserver: LIST serves `objects`; each WATCH request is answered by the next
// function of `watchScript`, which the test writes step by step.

interface FakeObj { metadata: { name: string; namespace: string; resourceVersion: string }; data?: Record<string, string> }
type WatchStep = (res: ServerResponse, query: URLSearchParams) => void;

class FakeApiserver {
  objects = new Map<string, FakeObj>();
  rv = 0;
  watchScript: WatchStep[] = [];
  watchRequests: URLSearchParams[] = [];
  listRequests: URLSearchParams[] = [];
  /** Status codes to answer the next LIST requests with, before answering normally. */
  listFailures: number[] = [];
  /** Answer a request that carries a continue token with 410 once. */
  expireContinueOnce = false;
  private server: Server | undefined;
  private open = new Set<ServerResponse>();
  get openWatches(): number { return this.open.size; }

  put(name: string, data: Record<string, string> = {}): FakeObj {
    const obj = { metadata: { name, namespace: 'fake', resourceVersion: String(++this.rv) }, data };
    this.objects.set(name, obj);
    return obj;
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    const addr = this.server.address();
    if (addr === null || typeof addr === 'string') throw new Error('no address');
    return `http://127.0.0.1:${addr.port}`;
  }

  async stop(): Promise<void> {
    for (const r of this.open) r.destroy();
    await new Promise<void>((r) => this.server?.close(() => r()) ?? r());
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== '/api/v1/namespaces/fake/configmaps' || req.headers.authorization !== 'Bearer fake-token') {
      res.writeHead(404).end();
      return;
    }
    if (url.searchParams.get('watch') === 'true') {
      this.watchRequests.push(url.searchParams);
      const step = this.watchScript.shift();
      if (!step) { res.writeHead(500).end('{"kind":"Status","code":500,"message":"no script"}'); return; }
      this.open.add(res);
      res.on('close', () => this.open.delete(res));
      step(res, url.searchParams);
      return;
    }
    this.listRequests.push(url.searchParams);
    const failure = this.listFailures.shift();
    if (failure) { status(res, failure, 'scripted list failure'); return; }
    const limit = Number(url.searchParams.get('limit') ?? '0');
    const cont = url.searchParams.get('continue');
    if (cont && this.expireContinueOnce) { this.expireContinueOnce = false; status(res, 410, 'continue token expired'); return; }
    const all = [...this.objects.values()];
    const offset = cont ? Number(cont) : 0;
    const page = limit > 0 ? all.slice(offset, offset + limit) : all.slice(offset);
    const next = limit > 0 && offset + limit < all.length ? String(offset + limit) : undefined;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({
      kind: 'ConfigMapList', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv), ...(next ? { continue: next } : {}) }, items: page,
    }));
  }
}

function status(res: ServerResponse, code: number, message: string): void {
  res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code, message }));
}
function startStream(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
  res.flushHeaders();
}
function send(res: ServerResponse, type: string, object: unknown): void {
  res.write(`${JSON.stringify({ type, object })}\n`);
}

describe('Informer against a scripted apiserver', () => {
  const fake = new FakeApiserver();
  let kc: KubeConfig;
  beforeAll(async () => {
    const server = await fake.start();
    kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server, skipTLSVerify: true }],
      users: [{ name: 'u', token: 'fake-token' }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'u' }],
      currentContext: 'fake',
    });
  });
  afterAll(async () => { await fake.stop(); });

  it('resumes from the last resourceVersion, retries errors with backoff, and relists on 410 emitting deletes', async () => {
    fake.put('a', { v: '1' });
    fake.put('b', { v: '1' });
    fake.listFailures = [503, 500];
    const { log, lines } = captureLog();
    const inf = track(new Informer<KubeObject>({ kc, path: '/api/v1/namespaces/fake/configmaps', name: 'fake', log, backoff: { initialMs: 20, maxMs: 200 }, watchTimeoutSeconds: 60 }));
    const { events } = recorder(inf);
    let bookmarkRv = '';
    let streamForStop: ServerResponse | undefined;
    fake.watchScript = [
      // 1: one change, a bookmark, then a clean close by the server.
      (res) => {
        startStream(res);
        const a = fake.put('a', { v: '2' });
        send(res, 'MODIFIED', a);
        bookmarkRv = String(fake.rv += 2);
        send(res, 'BOOKMARK', { kind: 'ConfigMap', apiVersion: 'v1', metadata: { resourceVersion: bookmarkRv } });
        setTimeout(() => res.end(), 50);
      },
      // 2: an internal error: retried with backoff, from the same resourceVersion.
      (res) => status(res, 500, 'etcd is having a bad day'),
      // 3: meanwhile b is deleted and c created, then the watch window is gone (410 as an event).
      (res) => {
        fake.objects.delete('b');
        fake.put('c', { v: '1' });
        startStream(res);
        send(res, 'ERROR', { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 410, reason: 'Expired', message: 'too old resource version' });
        setTimeout(() => res.end(), 50);
      },
      // 4: 410 as an HTTP status: relist again (nothing changed: no events).
      (res) => status(res, 410, 'Gone'),
      // 5: an ERROR event that is not 410: back off and watch again from the same place.
      (res) => {
        startStream(res);
        send(res, 'ERROR', { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 500, reason: 'InternalError', message: 'boom' });
      },
      // 6: stays open until the informer stops.
      (res) => { startStream(res); streamForStop = res; },
    ];

    await inf.start();
    expect(fake.listRequests.length).toBe(3);
    await waitFor('the scripted watches to run', async () => fake.watchScript.length === 0, 15_000);
    await waitFor('the last watch to be open', async () => streamForStop !== undefined, 5000);

    const q = fake.watchRequests;
    expect(q.length).toBe(6);
    expect(q[0]!.get('resourceVersion')).toBe('2');
    expect(q[0]!.get('allowWatchBookmarks')).toBe('true');
    expect(Number(q[0]!.get('timeoutSeconds'))).toBeGreaterThanOrEqual(60);
    expect(Number(q[0]!.get('timeoutSeconds'))).toBeLessThan(120);
    expect(q[1]!.get('resourceVersion')).toBe(bookmarkRv);
    expect(q[2]!.get('resourceVersion')).toBe(bookmarkRv);
    const relistRv = String(fake.rv);
    expect(q[3]!.get('resourceVersion')).toBe(relistRv);
    expect(q[4]!.get('resourceVersion')).toBe(relistRv);
    expect(q[5]!.get('resourceVersion')).toBe(relistRv);
    expect(fake.listRequests.length).toBe(5);
    expect(fake.listRequests.every((p) => p.get('limit') === '500')).toBe(true);

    expect(events.map((e) => `${e.type} ${e.key} ${e.obj.data ? JSON.stringify(e.obj.data) : ''}`)).toEqual([
      'add fake/a {"v":"1"}',
      'add fake/b {"v":"1"}',
      'update fake/a {"v":"2"}',
      'add fake/c {"v":"1"}',
      'delete fake/b {"v":"1"}',
    ]);
    expect(inf.list().map((o) => o.metadata.name).sort()).toEqual(['a', 'c']);
    const s = inf.stats;
    expect(s.expired).toBe(2);
    expect(s.lists).toBe(3);
    expect(s.errors).toBe(4);
    expect(lines.filter((l) => l.msg === 'list failed; retrying').map((l) => l.status)).toEqual([503, 500]);
    expect(lines.filter((l) => l.msg === 'watch failed; retrying').map((l) => l.status)).toEqual([500, 500]);

    await inf.stop();
    await waitFor('the server to see the watch closed', async () => fake.openWatches === 0, 5000);
  });

  it('falls back to one unpaged LIST when a continue token expires', async () => {
    fake.objects.clear();
    fake.watchRequests = [];
    fake.listRequests = [];
    for (let i = 0; i < 5; i++) fake.put(`p${i}`);
    fake.expireContinueOnce = true;
    fake.watchScript = [(res) => startStream(res)];
    const { log } = captureLog();
    const inf = track(new Informer<KubeObject>({ kc, path: '/api/v1/namespaces/fake/configmaps', name: 'fake-paged', log, pageSize: 2 }));
    await inf.start();
    expect(fake.listRequests.map((p) => `${p.get('limit') ?? '-'}:${p.get('continue') ?? '-'}`)).toEqual(['2:-', '2:2', '-:-']);
    expect(inf.list().map((o) => o.metadata.name).sort()).toEqual(['p0', 'p1', 'p2', 'p3', 'p4']);
  });

  it('start() rejects when stop() comes before the first LIST succeeds', async () => {
    fake.listFailures = Array.from({ length: 1000 }, () => 503);
    const { log } = captureLog();
    const inf = track(new Informer<KubeObject>({ kc, path: '/api/v1/namespaces/fake/configmaps', name: 'never', log, backoff: { initialMs: 10, maxMs: 20 } }));
    const started = inf.start();
    await waitFor('a few failed lists', async () => inf.stats.errors >= 3, 5000);
    expect(inf.hasSynced).toBe(false);
    await inf.stop();
    await expect(started).rejects.toThrow(/stopped before the first list/);
    fake.listFailures = [];
  });
});
