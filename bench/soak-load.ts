import { readFileSync, writeFileSync } from 'node:fs';
import { Agent, createServer, request, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { AttackKind } from './soak-workers.js';

// The soak's load, run as child processes of bench/soak.ts so that neither the measuring
// client nor the attackers share an event loop with the other (or with the orchestrator):
//   node --import tsx bench/soak-load.ts CONFIG.json
// role `healthy`: an open-loop client at a fixed rate, every latency recorded from the
// moment the request was due (so a stalled agent shows as latency, not as fewer requests).
// role `attackers`: one closed loop per hostile worker, plus the HTTP sink the subrequest
// flood fetches. Each writes its result as JSON to `out` and exits.

export interface HealthyConfig {
  role: 'healthy';
  port: number;
  host: string;
  rps: number;
  durationMs: number;
  timeoutMs: number;
  out: string;
  /** Every sample as [due ms since start, latency ms, status or 0] (errors: -1). */
  samplesOut: string;
}

export interface AttackerSpec { name: string; kind: AttackKind; host: string; concurrency: number }

export interface AttackersConfig {
  role: 'attackers';
  port: number;
  durationMs: number;
  out: string;
  sinkPort: number;
  sinkMiB: number;
  attackers: AttackerSpec[];
  egressTargets: string[];
}

export interface Outcomes {
  /** Requests (or connections) finished during the run. */
  total: number;
  /** '2xx', '101', '3xx', '4xx', '5xx', 'error'. */
  byClass: Record<string, number>;
  /** Distinct outcomes (status and the start of the body, numbers blanked; or the error), with counts. */
  detail: Record<string, number>;
  /** Requests still in flight when the run ended (cut off, not counted above). */
  cutAtEnd: number;
}

export interface SlowConn { kind: 'slow-body' | 'slow-header'; openedMs: number; lifetimeMs: number; end: 'server-closed' | 'server-reset' | 'open-at-end' | 'connect-error'; firstLine: string }

export interface HealthyResult {
  startedAtMs: number;
  sent: number;
  ok: number;
  non2xx: number;
  badBody: number;
  errors: number;
  errorDetail: Record<string, number>;
  /** How late the client's own timer fired (a starved client shows here). */
  clientLagMs: { p50: number; p99: number; max: number };
  perSecond: { s: number; n: number; failed: number; p50: number; p99: number; max: number }[];
  slowest: { atS: number; ms: number; status: number }[];
}

export interface AttackersResult {
  attackers: Record<string, Outcomes>;
  egress: Record<string, Record<string, number>>;
  slow: SlowConn[];
  sink: { requests: number; bytesIn: number; bytesOut: number };
}

/** Repeats of one outcome count together: request ids (hex) and numbers blanked. */
const norm = (s: string): string => s.replace(/\s+/g, ' ').replace(/\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b/gi, 'ID').replace(/\d+(\.\d+)?/g, 'N').slice(0, 120);
const classOf = (status: number): string => (status === 101 ? '101' : `${Math.floor(status / 100)}xx`);

function pct(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}

class Tally {
  readonly o: Outcomes = { total: 0, byClass: {}, detail: {}, cutAtEnd: 0 };
  add(cls: string, detail: string): void {
    this.o.total++;
    this.o.byClass[cls] = (this.o.byClass[cls] ?? 0) + 1;
    const keys = Object.keys(this.o.detail);
    const key = keys.length >= 40 && !(detail in this.o.detail) ? 'other' : detail;
    this.o.detail[key] = (this.o.detail[key] ?? 0) + 1;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One request; resolves with the status and the first 512 bytes of the body. */
function get(port: number, host: string, path: string, agent: Agent, timeoutMs: number): Promise<{ status: number; head: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host }, agent, timeout: timeoutMs }, (res) => {
      let head = '';
      res.on('data', (c: Buffer) => { if (head.length < 512) head += c.toString('utf8', 0, Math.min(c.length, 512)); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, head }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no response within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

// ---------------------------------------------------------------- healthy

async function runHealthy(cfg: HealthyConfig): Promise<HealthyResult> {
  // A well-behaved keep-alive client lets go of an idle connection before the server's
  // advertised `Keep-Alive: timeout=5` runs out (agentkeepalive's freeSocketTimeout is 4 s
  // for this reason); one reused at the very moment the server closes it fails with "socket
  // hang up", a race of the client's making that browsers and Go retry.
  const agent = new Agent({ keepAlive: true, maxSockets: 256, timeout: 4_000 });
  const interval = 1000 / cfg.rps;
  const start = performance.now();
  const end = start + cfg.durationMs;
  const samples: [number, number, number][] = [];
  const lags: number[] = [];
  const errorDetail: Record<string, number> = {};
  let ok = 0, non2xx = 0, badBody = 0, errors = 0;
  const pending = new Set<Promise<void>>();
  const fire = (due: number, now: number): void => {
    lags.push(now - due);
    const p = new Promise<void>((done) => {
      const req = request({ host: '127.0.0.1', port: cfg.port, path: '/', headers: { host: cfg.host }, agent, timeout: cfg.timeoutMs }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => { body += c.toString('utf8'); });
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          samples.push([due - start, performance.now() - due, status]);
          if (status < 200 || status > 299) non2xx++;
          else if (!body.startsWith('{"ok":true')) badBody++;
          else ok++;
          done();
        });
        res.on('error', (err) => { errors++; errorDetail[norm(err.message)] = (errorDetail[norm(err.message)] ?? 0) + 1; samples.push([due - start, performance.now() - due, -1]); done(); });
      });
      req.on('timeout', () => req.destroy(new Error(`no response within ${cfg.timeoutMs} ms`)));
      req.on('error', (err) => {
        errors++;
        errorDetail[norm(err.message)] = (errorDetail[norm(err.message)] ?? 0) + 1;
        samples.push([due - start, performance.now() - due, -1]);
        done();
      });
      req.end();
    });
    pending.add(p);
    void p.then(() => pending.delete(p));
  };
  let i = 0;
  await new Promise<void>((finished) => {
    const tick = (): void => {
      const now = performance.now();
      for (;;) {
        const due = start + i * interval;
        if (due > now || due >= end) break;
        fire(due, now);
        i++;
      }
      const next = start + i * interval;
      if (next >= end) { finished(); return; }
      setTimeout(tick, Math.max(0, next - performance.now()));
    };
    tick();
  });
  await Promise.all(pending);
  agent.destroy();
  writeFileSync(cfg.samplesOut, JSON.stringify(samples.map(([t, ms, st]) => [Math.round(t), Math.round(ms * 100) / 100, st])));
  const bySecond = new Map<number, [number, number][]>();
  for (const [t, ms, st] of samples) {
    const s = Math.floor(t / 1000);
    const list = bySecond.get(s) ?? [];
    list.push([ms, st]);
    bySecond.set(s, list);
  }
  const perSecond = [...bySecond.entries()].sort((a, b) => a[0] - b[0]).map(([s, list]) => {
    const ms = list.map((x) => x[0]).sort((a, b) => a - b);
    return {
      s, n: list.length, failed: list.filter((x) => x[1] < 200 || x[1] > 299).length,
      p50: round(pct(ms, 50)), p99: round(pct(ms, 99)), max: round(ms[ms.length - 1] ?? NaN),
    };
  });
  const slowest = [...samples].sort((a, b) => b[1] - a[1]).slice(0, 50).map(([t, ms, st]) => ({ atS: round(t / 1000), ms: round(ms), status: st }));
  const lagSorted = lags.sort((a, b) => a - b);
  return {
    startedAtMs: Date.now() - (performance.now() - start),
    sent: i, ok, non2xx, badBody, errors, errorDetail,
    clientLagMs: { p50: round(pct(lagSorted, 50)), p99: round(pct(lagSorted, 99)), max: round(lagSorted[lagSorted.length - 1] ?? NaN) },
    perSecond, slowest,
  };
}

const round = (v: number): number => Math.round(v * 100) / 100;

// ---------------------------------------------------------------- attackers

interface Run { port: number; until: number }

async function httpLoop(run: Run, a: AttackerSpec, path: (n: number) => string, tally: Tally, onReply?: (r: { status: number; head: string }, path: string) => void): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: a.concurrency });
  let n = 0;
  const inflight = new Set<Promise<void>>();
  const one = async (): Promise<void> => {
    while (performance.now() < run.until) {
      const p = path(n++);
      let settled = false;
      const req = get(run.port, a.host, p, agent, 40_000).then((r) => {
        settled = true;
        if (performance.now() > run.until + 1000) { tally.o.cutAtEnd++; return; }
        tally.add(classOf(r.status), `${r.status} ${norm(r.head)}`);
        onReply?.(r, p);
      }, (err: Error) => {
        settled = true;
        if (performance.now() > run.until + 1000) { tally.o.cutAtEnd++; return; }
        tally.add('error', `error ${norm(err.message)}`);
        // A refused connection (the agent is down) must not become a busy loop.
        return sleep((err as NodeJS.ErrnoException).code === 'ECONNREFUSED' ? 500 : 100);
      });
      // The run ends on time even when a request hangs: stop waiting for it then.
      await Promise.race([req, sleep(Math.max(0, run.until + 1000 - performance.now()))]);
      if (!settled) { tally.o.cutAtEnd++; break; }
    }
  };
  for (let c = 0; c < a.concurrency; c++) inflight.add(one());
  await Promise.all(inflight);
  agent.destroy();
}

/** Opens a WebSocket (hand-written upgrade) and never reads after the response head. */
function wsNeverReads(port: number, host: string): Promise<{ status: number; head: string; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let buf = '';
    const timer = setTimeout(() => { s.destroy(); reject(new Error('no upgrade response within 10 s')); }, 10_000);
    s.on('error', (err) => { clearTimeout(timer); reject(err); });
    s.on('connect', () => {
      s.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${Buffer.from('soak-never-reads').toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    const onData = (c: Buffer): void => {
      buf += c.toString('latin1', 0, Math.min(c.length, 2048));
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0 && buf.length < 4096) return;
      clearTimeout(timer);
      s.off('data', onData);
      s.pause(); // never read again: the agent's outgoing messages pile up somewhere
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(buf)?.[1] ?? 0);
      resolve({ status, head: buf.slice(buf.indexOf('\r\n\r\n') + 4, 200), socket: s });
    };
    s.on('data', onData);
  });
}

async function wsLoop(run: Run, a: AttackerSpec, tally: Tally): Promise<void> {
  const holdMs = 5000;
  const one = async (): Promise<void> => {
    while (performance.now() < run.until) {
      try {
        const r = await wsNeverReads(run.port, a.host);
        tally.add(classOf(r.status), `${r.status}${r.status === 101 ? '' : ` ${norm(r.head)}`}`);
        let closedByServer = false;
        r.socket.once('close', () => { closedByServer = true; });
        await sleep(Math.min(holdMs, Math.max(0, run.until - performance.now())));
        if (closedByServer) tally.add('closed', 'socket closed by the agent before the client let go');
        r.socket.destroy();
      } catch (err) {
        tally.add('error', `error ${norm((err as Error).message)}`);
        await sleep((err as NodeJS.ErrnoException).code === 'ECONNREFUSED' ? 500 : 200);
      }
    }
  };
  await Promise.all(Array.from({ length: a.concurrency }, one));
}

/** Slow clients: a body dripped one byte a second, or headers dripped one byte every two seconds. */
async function slowLoop(run: Run, a: AttackerSpec, tally: Tally, conns: SlowConn[], t0: number): Promise<void> {
  const kind = a.kind === 'slow-body' ? 'slow-body' : 'slow-header';
  const one = (): Promise<void> => new Promise((resolve) => {
    const openedAt = performance.now();
    const s = connect(run.port, '127.0.0.1');
    let firstLine = '';
    let connected = false;
    let finished = false;
    const finish = (end: SlowConn['end']): void => {
      if (finished) return;
      finished = true;
      clearInterval(drip);
      clearTimeout(stop);
      s.destroy();
      conns.push({ kind, openedMs: Math.round(openedAt - t0), lifetimeMs: Math.round(performance.now() - openedAt), end, firstLine });
      if (end !== 'open-at-end') {
        const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(firstLine)?.[1] ?? 0);
        const cls = end === 'connect-error' ? 'error' : status ? classOf(status) : 'closed';
        tally.add(cls, `${end}${firstLine ? ` after ${firstLine}` : ''}`);
      }
      resolve();
    };
    const head = `POST / HTTP/1.1\r\nHost: ${a.host}\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n`;
    const slowHeader = `GET / HTTP/1.1\r\nHost: ${a.host}\r\nX-Slow: ${'a'.repeat(10_000)}`;
    let sent = 0;
    const drip = setInterval(() => {
      if (!connected) return;
      if (kind === 'slow-body') s.write('z');
      else if (sent < slowHeader.length) s.write(slowHeader[sent++] ?? 'a');
    }, kind === 'slow-body' ? 1000 : 2000);
    const stop = setTimeout(() => finish('open-at-end'), Math.max(0, run.until - performance.now()));
    s.on('connect', () => {
      connected = true;
      if (kind === 'slow-body') s.write(head);
      else { s.write(slowHeader.slice(0, 20)); sent = 20; }
    });
    s.on('data', (c: Buffer) => { if (!firstLine) firstLine = c.toString('latin1', 0, Math.min(c.length, 200)).split('\r\n')[0] ?? ''; });
    s.on('end', () => finish('server-closed'));
    s.on('close', () => finish(connected ? 'server-closed' : 'connect-error'));
    s.on('error', (err: NodeJS.ErrnoException) => finish(!connected ? 'connect-error' : err.code === 'ECONNRESET' ? 'server-reset' : 'server-closed'));
  });
  const lane = async (): Promise<void> => {
    while (performance.now() < run.until) {
      const before = conns.length;
      await one();
      const refused = conns.length > before && conns[conns.length - 1]?.end === 'connect-error';
      if (performance.now() < run.until) await sleep(refused ? 500 : 200);
    }
  };
  await Promise.all(Array.from({ length: a.concurrency }, lane));
}

function startSink(port: number, mib: number, stats: AttackersResult['sink']): Promise<Server> {
  const payload = Buffer.alloc(mib * 1024 * 1024, 0x73);
  const server = createServer((req, res) => {
    stats.requests++;
    req.on('data', (c: Buffer) => { stats.bytesIn += c.length; });
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(payload.length) });
      res.end(payload);
      stats.bytesOut += payload.length;
    });
    req.on('error', () => res.destroy());
  });
  server.keepAliveTimeout = 5000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

async function runAttackers(cfg: AttackersConfig): Promise<AttackersResult> {
  const result: AttackersResult = { attackers: {}, egress: {}, slow: [], sink: { requests: 0, bytesIn: 0, bytesOut: 0 } };
  const sink = await startSink(cfg.sinkPort, cfg.sinkMiB, result.sink);
  const t0 = performance.now();
  const run: Run = { port: cfg.port, until: t0 + cfg.durationMs };
  const loops = cfg.attackers.map((a) => {
    const tally = new Tally();
    result.attackers[a.name] = tally.o;
    switch (a.kind) {
      case 'websocket': return wsLoop(run, a, tally);
      case 'slow-body': case 'slow-header': return slowLoop(run, a, tally, result.slow, t0);
      case 'timers': return httpLoop(run, a, (n) => (n % 50 === 49 ? '/?spin=1' : '/'), tally);
      case 'egress': {
        const targets = cfg.egressTargets;
        return httpLoop(run, a, (n) => `/?t=${targets[n % targets.length] ?? ''}`, tally, (r, p) => {
          const target = new URL(p, 'http://x').searchParams.get('t') ?? '?';
          let what: string;
          try {
            const j = JSON.parse(r.head) as { status?: number; bytes?: number; head?: string; error?: string };
            what = j.error !== undefined ? `fetch failed: ${norm(j.error)}` : `got ${j.status} (${j.bytes} bytes): ${(j.head ?? '').replace(/\s+/g, ' ').slice(0, 60)}`;
          } catch { what = `worker answered ${r.status}: ${norm(r.head)}`; }
          const m = (result.egress[target] ??= {});
          m[what] = (m[what] ?? 0) + 1;
        });
      }
      default: return httpLoop(run, a, () => '/', tally);
    }
  });
  await Promise.all(loops);
  await new Promise<void>((r) => { sink.close(() => r()); sink.closeAllConnections(); });
  return result;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const file = process.argv[2];
  if (!file) throw new Error('usage: soak-load.ts CONFIG.json');
  const cfg = JSON.parse(readFileSync(file, 'utf8')) as HealthyConfig | AttackersConfig;
  const out = cfg.role === 'healthy' ? await runHealthy(cfg) : await runAttackers(cfg);
  writeFileSync(cfg.out, JSON.stringify(out));
}

main().then(() => process.exit(0), (err: unknown) => {
  process.stderr.write(`soak-load: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
