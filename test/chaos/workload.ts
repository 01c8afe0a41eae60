import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CoreV1Api } from '@kubernetes/client-node';
import type { Condition } from '../../common/api/index.js';
import type { LocalAgent, LocalCluster } from '../../cli/local/cluster.js';
import { waitFor } from '../../cli/local/ports.js';
import { crPath, KubeClient } from '../../operator/runtime/kube-client.js';
import type { Op } from './checker.js';

// The list-append workload of the chaos test and bench (test/chaos/README in docs/chaos.md):
// a DurableActor per key holding one list, clients appending unique values and reading,
// through every agent of the region the way a load balancer that follows /readyz would
// send them, each operation recorded with its invoke and completion time and an outcome
// the checker can trust: ok, fail (certainly not done) or unknown.

export const HOST = 'lists.chaos';
export const NS = 'chaos';

/** The worker: plain JS, Durable Objects style. `/arm` and `alarm()` exist for the alarm check. */
export const LIST_WORKER = `
export class List {
  constructor(state) { this.state = state; }
  async fetch(request) {
    const url = new URL(request.url);
    const s = this.state.storage;
    switch (url.pathname) {
      case '/append': {
        const list = (await s.get('list')) ?? [];
        list.push(url.searchParams.get('v'));
        await s.put('list', list);
        return Response.json(list);
      }
      case '/read':
        return Response.json((await s.get('list')) ?? []);
      case '/arm': {
        await s.put('alarm', { seq: Number(url.searchParams.get('seq')), key: url.searchParams.get('key'), to: url.searchParams.get('to') });
        await s.setAlarm(Date.now() + Number(url.searchParams.get('ms') ?? 100));
        return new Response('armed');
      }
      default:
        return new Response('no such route', { status: 404 });
    }
  }
  async alarm() {
    const a = await this.state.storage.get('alarm');
    if (!a) return;
    // The side effect a client can see: every run of the handler calls the recorder.
    await fetch(a.to + '/fired?key=' + encodeURIComponent(a.key) + '&seq=' + a.seq);
    await this.state.storage.put('fired', a.seq);
  }
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const key = url.searchParams.get('key') ?? 'k';
    const id = env.LISTS.idFromName(key);
    if (url.pathname === '/id') return new Response(id.toString());
    return env.LISTS.get(id).fetch(request);
  },
};`;

/** Creates the namespace, the DurableActor class and the worker, and waits until both are Ready. */
export async function deployListWorker(cluster: LocalCluster): Promise<void> {
  const kube = new KubeClient(cluster.kubeConfig);
  await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: NS } } });
  const region = cluster.opts.regions[0]!;
  const post = (plural: string, kind: string, name: string, spec: Record<string, unknown>) => kube.request('POST', crPath(plural, NS), {
    body: { apiVersion: 'edge.isolates.dev/v1alpha1', kind, metadata: { name, namespace: NS }, spec }, query: { fieldValidation: 'Strict' },
  });
  await post('durableactors', 'DurableActor', 'lists', { workerRef: { name: 'lists' }, className: 'List', locationHint: region, idleTimeoutSeconds: 300 });
  await post('edgeworkers', 'EdgeWorker', 'lists', {
    source: { inline: LIST_WORKER }, routes: [{ host: HOST }], limits: { cpuMsPerRequest: 500 },
    bindings: { actors: [{ name: 'LISTS', actor: 'lists' }] },
  });
  const ready = async (plural: string) => {
    const o = await kube.request<{ metadata: { generation: number }; status?: { observedGeneration?: number; conditions?: Condition[] } }>('GET', crPath(plural, NS, 'lists'));
    return o.status?.observedGeneration === o.metadata.generation && o.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
  };
  await waitFor('the list worker and actor class Ready', async () => (await ready('edgeworkers')) && (await ready('durableactors')), 90_000, 200);
  // Every agent serves it (a 404 means the route is not there yet).
  await waitFor('every agent routes the list worker', async () => {
    const rs = await Promise.all(cluster.agents.filter((a) => a.proc.running).map((a) => call(a.port, 'GET', '/read?key=warmup', 5000)));
    return rs.every((r) => r.outcome === 'ok');
  }, 90_000, 250);
}

export interface CallResult { outcome: Op['outcome']; status?: number; body?: string; error?: string }

/**
 * One HTTP call with the outcome the checker may rely on. fail: refused or reset before a
 * byte was written, or a 4xx (nothing ran: no route, bad request), or a 503 the agent says
 * it gave without running anything. Everything else that is not a 2xx is unknown.
 */
export function call(port: number, method: 'GET' | 'POST', path: string, timeoutMs: number): Promise<CallResult> {
  return new Promise((resolve) => {
    let sent = false;
    let done = false;
    const finish = (r: CallResult) => { if (!done) { done = true; resolve(r); } };
    const req = request({ host: '127.0.0.1', port, method, path, headers: { host: HOST, 'content-length': 0 }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) finish({ outcome: 'ok', status, body });
        else if (status >= 400 && status < 500) finish({ outcome: 'fail', status, body: body.slice(0, 300), error: `${status}` });
        else finish({ outcome: 'unknown', status, body: body.slice(0, 300), error: `${status} ${body.slice(0, 200)}` });
      });
      res.on('error', (err) => finish({ outcome: 'unknown', error: String(err) }));
    });
    req.on('socket', (s) => s.once('connect', () => { sent = true; }));
    req.on('error', (err: NodeJS.ErrnoException) => {
      // Refused: the connection never opened, so nothing was sent.
      const certain = !sent && (err.code === 'ECONNREFUSED' || err.code === 'ECONNRESET');
      finish({ outcome: certain ? 'fail' : 'unknown', error: `${err.code ?? ''} ${err.message}`.trim() });
    });
    req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error(`no answer in ${timeoutMs} ms`), { code: 'TIMEOUT' })));
    req.end();
  });
}

/**
 * Which agents a load balancer would send to: those whose /readyz answered 200 at the last
 * poll. The agents are looked up by node each time, so a restarted agent (a new LocalAgent
 * in cluster.agents with new ports) is followed.
 */
export class Balancer {
  private ready = new Map<string, boolean>();
  private timer: NodeJS.Timeout | undefined;
  constructor(private readonly cluster: LocalCluster, private readonly pollMs = 200) {}

  /** The newest LocalAgent per node. */
  current(): LocalAgent[] {
    const byNode = new Map<string, LocalAgent>();
    for (const a of this.cluster.agents) byNode.set(a.node, a);
    return [...byNode.values()];
  }

  start(): void {
    const poll = async () => {
      await Promise.all(this.current().map(async (a) => {
        let ok = false;
        try { ok = a.proc.running && (await fetch(`http://127.0.0.1:${a.admin}/readyz`, { signal: AbortSignal.timeout(500) })).ok; } catch { ok = false; }
        this.ready.set(a.node, ok);
      }));
      if (this.timer !== undefined) this.timer = setTimeout(() => void poll(), this.pollMs);
    };
    this.timer = setTimeout(() => void poll(), 0);
  }

  stop(): void { clearTimeout(this.timer); this.timer = undefined; }

  /** A ready agent at random; any agent when none is ready (the client still tries). */
  pick(): LocalAgent {
    const all = this.current();
    const up = all.filter((a) => this.ready.get(a.node) !== false);
    const from = up.length ? up : all;
    return from[Math.floor(Math.random() * from.length)]!;
  }
}

export interface WorkloadOptions {
  keys: string[];
  /** Concurrent clients; each picks a key at random per op. */
  clients: number;
  /** Share of appends on even-numbered keys; odd ones get a fifth of it, so a stale state is read many times before a write fences it. */
  appendRatio: number;
  /** Client-side timeout per call (an expired one is unknown). */
  timeoutMs: number;
  /** Pause after a failed or unknown call, so a down agent is not spun on. */
  backoffMs: number;
}

/** The running clients and the history they write. */
export class Workload {
  readonly history: Op[] = [];
  private running = false;
  private loops: Promise<void>[] = [];
  private seq = 0;
  /** performance.now() at start: every time in the history is ms since then. */
  readonly t0 = performance.now();

  constructor(private readonly lb: Balancer, private readonly opts: WorkloadOptions) {}

  now(): number { return performance.now() - this.t0; }

  start(): void {
    this.running = true;
    this.loops = Array.from({ length: this.opts.clients }, (_, p) => this.client(p));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  private async client(p: number): Promise<void> {
    while (this.running) {
      const i = Math.floor(Math.random() * this.opts.keys.length);
      const key = this.opts.keys[i]!;
      const append = Math.random() < (i % 2 === 0 ? this.opts.appendRatio : this.opts.appendRatio / 5);
      const op = await this.op(p, key, append ? `${p}-${this.seq++}` : undefined);
      if (op.outcome !== 'ok') await new Promise((r) => setTimeout(r, this.opts.backoffMs));
    }
  }

  /** One append (value given) or read, recorded. */
  async op(p: number, key: string, value?: string, final = false): Promise<Op> {
    const a = this.lb.pick();
    const path = value === undefined ? `/read?key=${encodeURIComponent(key)}` : `/append?key=${encodeURIComponent(key)}&v=${encodeURIComponent(value)}`;
    const invokeMs = this.now();
    const r = await call(a.port, value === undefined ? 'GET' : 'POST', path, this.opts.timeoutMs);
    let outcome = r.outcome;
    let list: string[] | undefined;
    if (outcome === 'ok') {
      try { list = JSON.parse(r.body!) as string[]; } catch { outcome = 'unknown'; }
    }
    const op: Op = {
      process: p, type: value === undefined ? 'read' : 'append', key, invokeMs, completeMs: this.now(), outcome, via: a.node,
      ...(value !== undefined ? { value } : {}), ...(list ? { list } : {}), ...(r.error ? { error: r.error } : {}), ...(final ? { final } : {}),
    };
    this.history.push(op);
    return op;
  }

  /** After the faults: one ok read per key through every agent (retried until ok), marked final. */
  async finalReads(deadlineMs = 60_000): Promise<void> {
    const until = performance.now() + deadlineMs;
    await Promise.all(this.opts.keys.map(async (key) => {
      for (const a of this.lb.current()) {
        while (performance.now() < until) {
          const invokeMs = this.now();
          const r = await call(a.port, 'GET', `/read?key=${encodeURIComponent(key)}`, this.opts.timeoutMs);
          if (r.outcome === 'ok') {
            this.history.push({ process: -1, type: 'read', key, invokeMs, completeMs: this.now(), outcome: 'ok', list: JSON.parse(r.body!) as string[], final: true, via: a.node });
            break;
          }
          await new Promise((res) => setTimeout(res, 200));
        }
      }
    }));
  }
}

/**
 * The alarm check: a client per key arms an alarm (a sequence number in storage) and waits
 * until the handler has called this recorder, then arms the next. A handler that ran twice
 * for one arming shows as two calls for one (key, seq).
 */
export class AlarmRecorder {
  private server: Server | undefined;
  /** `${key}/${seq}` -> the times (ms since the workload's t0) the handler ran. */
  readonly runs = new Map<string, number[]>();
  url = '';
  private running = false;
  private loops: Promise<void>[] = [];
  armed = 0;

  constructor(private readonly now: () => number) {}

  async listen(): Promise<void> {
    this.server = createServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://x');
      const id = `${u.searchParams.get('key')}/${u.searchParams.get('seq')}`;
      const l = this.runs.get(id) ?? [];
      l.push(this.now());
      this.runs.set(id, l);
      res.end('ok');
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  start(lb: Balancer, keys: string[], timeoutMs: number): void {
    this.running = true;
    this.loops = keys.map(async (key) => {
      let seq = 0;
      while (this.running) {
        seq++;
        const r = await call(lb.pick().port, 'POST', `/arm?key=${encodeURIComponent(key)}&seq=${seq}&ms=100&to=${encodeURIComponent(this.url)}`, timeoutMs);
        if (r.outcome !== 'ok') { await new Promise((res) => setTimeout(res, 200)); continue; }
        this.armed++;
        const until = performance.now() + 10_000;
        while (this.running && !this.runs.has(`${key}/${seq}`) && performance.now() < until) await new Promise((res) => setTimeout(res, 50));
      }
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  async close(): Promise<void> { await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r())); }

  /** (key, seq) pairs whose handler ran more than once, with the times of the runs. */
  doubles(): { id: string; at: number[] }[] {
    return [...this.runs].filter(([, at]) => at.length > 1).map(([id, at]) => ({ id, at }));
  }
}
