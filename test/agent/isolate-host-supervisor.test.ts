import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../cli/local/ports.js';
import { createLogger, type LogFields } from '../../common/log.js';
import { FrontMetrics } from '../../node-agent/hosts/metrics.js';
import { HostSupervisor, type HostSupervisorOptions } from '../../node-agent/hosts/supervisor.js';

// The supervisor on its own, with stand-in host processes that speak the IPC protocol
// (node-agent/hosts/protocol.ts) and serve one route on their Unix socket: spares are
// promoted, a host that keeps dying is backed off, routes stay known (503, not 404) while
// a host is down, and stop() leaves no process behind.

// Host i serves "ns<i>/w" at w<i>.test, the cordon host (index = count) "hot/w" at
// hot.w.test. Host 0 reports a limit hit of namespace "hot" whenever it is asked its
// status: the cordon tests' way to make the front cordon "hot".
const STUB = `
const http = require('node:http');
const path = require('node:path');
let index = -1;
process.on('disconnect', () => process.exit(0));
process.on('message', (m) => {
  if (m.type === 'stop') process.exit(0);
  if (m.type === 'status') {
    if (index === 0) process.send({ type: 'usage', usage: { hot: { cpuMs: 0, requests: 0, limitHits: 1 } } });
    process.send({ type: 'status', id: m.id, status: { ready: true, workers: [], actors: [] } });
  }
  if (m.type !== 'start') return;
  index = m.index;
  const socketPath = path.join(m.socketDir, 'h' + m.index + '.' + process.pid + '.sock');
  const route = m.index === m.count ? { key: 'hot/w', host: 'hot.w.test' } : { key: 'ns' + m.index + '/w', host: 'w' + m.index + '.test' };
  http.createServer((req, res) => res.end('host ' + m.index + ' pid ' + process.pid)).listen(socketPath, () => {
    process.send({ type: 'ready', socketPath, routes: [{ key: route.key, routes: [{ host: route.host, pathPrefix: '/' }] }] });
  });
});
process.send({ type: 'booted' });
`;

/** A supervisor of two stub hosts and a spare, its logs, and its directory removed after the block's tests. */
function stubSupervisor(extra: Partial<HostSupervisorOptions<object>> = {}): { sup: HostSupervisor<object>; logs: LogFields[] } {
  const dir = mkdtempSync(join(tmpdir(), 'edge-supervisor-'));
  writeFileSync(join(dir, 'stub.cjs'), STUB);
  const logs: LogFields[] = [];
  const log = createLogger({}, (line) => { logs.push(JSON.parse(line) as LogFields); }, 'debug');
  const sup = new HostSupervisor<object>({
    count: 2, spares: 1, command: [process.execPath, join(dir, 'stub.cjs')], socketDir: dir, config: () => ({}), log, metrics: new FrontMetrics(), ...extra,
  });
  afterAll(async () => {
    await sup.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return { sup, logs };
}

function get(socketPath: string): Promise<string> {
  return new Promise((resolveGet, reject) => {
    const req = request({ socketPath, path: '/' }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => { body += c.toString(); });
      res.on('end', () => resolveGet(body));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('HostSupervisor', () => {
  const { sup, logs } = stubSupervisor();

  it('starts the hosts, routes by what they report, and replaces a dead one with the spare', async () => {
    await sup.start();
    expect(sup.ready).toBe(true);
    expect(sup.route('w1.test', '/x')).toEqual({ index: 1, worker: 'ns1/w' });
    expect(sup.route('other.test', '/')).toBeUndefined();
    const [h0, h1] = sup.hosts();
    expect(await get(sup.target(1)!.socketPath)).toBe(`host 1 pid ${h1!.pid}`);

    process.kill(h1!.pid!, 'SIGKILL');
    await waitFor('host 1 noticed down', async () => sup.target(1) === undefined || sup.hosts()[1]!.pid !== h1!.pid, 5_000, 5);
    // While it is down its routes stay, so the front answers 503 rather than 404.
    expect(sup.route('w1.test', '/')?.index).toBe(1);
    await waitFor('host 1 back', async () => sup.target(1) !== undefined && sup.hosts()[1]!.pid !== h1!.pid, 10_000, 10);
    expect(await get(sup.target(1)!.socketPath)).toBe(`host 1 pid ${sup.hosts()[1]!.pid!}`);
    expect(sup.hosts()[0]).toMatchObject({ pid: h0!.pid, restarts: 0 });
    expect(sup.hosts()[1]).toMatchObject({ up: true, restarts: 1 });
    expect(logs.some((l) => l.msg === 'isolate host restarted' && l.host === 1)).toBe(true);
  });

  it('backs off a host that keeps dying, and the other host is not touched', async () => {
    const other = sup.hosts()[0]!.pid;
    for (let i = 0; i < 4; i++) {
      await waitFor('host 1 up', async () => sup.target(1) !== undefined, 20_000, 10);
      const pid = sup.hosts()[1]!.pid!;
      process.kill(pid, 'SIGKILL');
      await waitFor('host 1 replaced', async () => sup.target(1) !== undefined && sup.hosts()[1]!.pid !== pid, 20_000, 10);
    }
    // 5 deaths within the window: the 4th and 5th waited.
    const backoffs = logs.filter((l) => l.msg === 'isolate host keeps crashing; backing off').map((l) => l.restartInMs);
    expect(backoffs).toEqual([500, 1000]);
    await waitFor('host 1 up after the backoff', async () => sup.target(1) !== undefined, 20_000, 10);
    expect(sup.hosts()[0]!.pid).toBe(other);
  });

  it('stops every host and spare', async () => {
    const pids = [...sup.hosts().map((h) => h.pid!)];
    await sup.stop();
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });
});

describe('HostSupervisor with no standing spare', () => {
  const { sup, logs } = stubSupervisor({ spares: 0, crashSpareMs: 5_000 });
  const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

  it('boots a spare only after a crash, promotes it at the next, and stops it once crashes stop', async () => {
    await sup.start();
    expect(sup.spareProcesses()).toEqual([]);

    const first = sup.hosts()[0]!.pid!;
    process.kill(first, 'SIGKILL');
    await waitFor('host 0 replaced', async () => sup.target(0) !== undefined && sup.hosts()[0]!.pid !== first, 10_000, 10);
    // Spawned once the replacement serves, not beside it.
    await waitFor('a spare booted', async () => sup.spareProcesses().length === 1, 10_000, 10);
    const [spare] = sup.spareProcesses();

    // The next crash (within the time) is a promotion: the spare becomes host 1.
    const second = sup.hosts()[1]!.pid!;
    process.kill(second, 'SIGKILL');
    await waitFor('host 1 replaced', async () => sup.target(1) !== undefined && sup.hosts()[1]!.pid !== second, 10_000, 10);
    expect(sup.hosts()[1]!.pid).toBe(spare);
    await waitFor('a new spare', async () => sup.spareProcesses().length === 1 && sup.spareProcesses()[0] !== spare, 10_000, 10);
    const [next] = sup.spareProcesses();

    // crashSpareMs after the latest crash it is stopped, not respawned, and not taken for a crash.
    await waitFor('the spare stopped', async () => sup.spareProcesses().length === 0 && !alive(next!), 10_000, 20);
    await new Promise((r) => setTimeout(r, 1_200));
    expect(sup.spareProcesses()).toEqual([]);
    expect(logs.filter((l) => l.msg === 'spare isolate host stopped: no crash for a while')).toHaveLength(1);
    expect(logs.some((l) => l.msg === 'spare isolate host exited')).toBe(false);
    expect(sup.hosts().map((h) => h.restarts)).toEqual([1, 1]);

    // A crash after that is a fresh process again, and keeps a spare again.
    const third = sup.hosts()[0]!.pid!;
    process.kill(third, 'SIGKILL');
    await waitFor('host 0 replaced again', async () => sup.target(0) !== undefined && sup.hosts()[0]!.pid !== third, 10_000, 10);
    await waitFor('a spare again', async () => sup.spareProcesses().length === 1, 10_000, 10);
  });
});

describe('HostSupervisor with a cordon', () => {
  const { sup, logs } = stubSupervisor({ cordon: { cores: 2, holdMs: 300, maxHoldMs: 300 }, releaseGraceMs: 200, cordonLingerMs: 500 });
  const cordonHost = () => sup.hosts().find((h) => h.cordon)!;
  const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

  it('starts no cordon host process until a namespace is cordoned, then starts one', async () => {
    await sup.start();
    expect(sup.ready).toBe(true);
    expect(cordonHost()).toMatchObject({ index: 2, up: false, pid: undefined, restarts: 0 });
    await sup.status(); // host 0 reports a limit hit of "hot"
    await waitFor('the cordon host up', async () => cordonHost().up, 10_000, 10);
    expect(sup.cordon!.cordoned()).toEqual(['hot']);
    expect(cordonHost()).toMatchObject({ workers: ['hot/w'], restarts: 0 });
    expect(sup.route('hot.w.test', '/')?.index).toBe(2);
    expect(logs.some((l) => l.msg === 'starting the cordon host')).toBe(true);
  });

  it('restarts a cordon host that dies while it serves, as any host', async () => {
    await sup.status(); // "hot" offends again: still cordoned
    const pid = cordonHost().pid!;
    process.kill(pid, 'SIGKILL');
    await waitFor('a new cordon host', async () => {
      await sup.status();
      return cordonHost().up && cordonHost().pid !== pid;
    }, 10_000, 20);
    expect(cordonHost()).toMatchObject({ restarts: 1, workers: ['hot/w'] });
    expect(logs.some((l) => l.msg === 'isolate host died; its workers answer 503 until it is back' && l.pid === pid)).toBe(true);
  });

  it('stops the cordon host once it has served nothing for the linger time, not as a crash, and starts it again at the next cordon', async () => {
    const pid = cordonHost().pid!;
    const died = logs.filter((l) => l.msg === 'isolate host died; its workers answer 503 until it is back').length;
    // Hold 300 ms, release grace 200 ms, linger 500 ms, evaluated every 500 ms.
    await waitFor('the cordon host stopped', async () => !cordonHost().up && !alive(pid), 10_000, 20);
    expect(sup.cordon!.cordoned()).toEqual([]);
    expect(cordonHost()).toMatchObject({ pid: undefined, restarts: 1 });
    expect(logs.some((l) => l.msg === 'cordon host stopped: nothing to serve' && l.pid === pid)).toBe(true);
    expect(logs.filter((l) => l.msg === 'isolate host died; its workers answer 503 until it is back')).toHaveLength(died);
    // Nothing cordoned and no cordon host: "hot" goes nowhere, the ordinary hosts are untouched.
    expect(sup.route('hot.w.test', '/')).toBeUndefined();
    expect(sup.ready).toBe(true);
    // The next cordon starts it again.
    await sup.status();
    await waitFor('the cordon host up again', async () => cordonHost().up, 10_000, 10);
    expect(cordonHost().pid).not.toBe(pid);
  });

  it('stops every process, a lingering cordon host included', async () => {
    const pids = sup.hosts().flatMap((h) => (h.pid !== undefined ? [h.pid] : []));
    expect(pids).toHaveLength(3);
    await sup.stop();
    for (const p of pids) expect(alive(p)).toBe(false);
  });
});
