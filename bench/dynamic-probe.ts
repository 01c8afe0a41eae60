// A quick in-process probe of the Worker Loader's speed (not part of `npm run bench`):
// `npx tsx bench/dynamic-probe.ts [rounds]`. One in-process agent; the parent worker
// (bench/workloads.ts LOADER_SOURCE) answers /load, /get?id= and /svc (the same trivial
// module deployed, called through a service binding) and reports its own time for the
// call in x-parent-ms. Interleaved, so a busy machine slows all three alike.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent as HttpAgent, request } from 'node:http';
import { stringify } from 'yaml';
import { createLogger } from '../common/log.js';
import { Agent } from '../node-agent/agent.js';
import { DYNAMIC_MODULE, LOADER_SOURCE } from './workloads.js';
import { summarize } from './http.js';

const rounds = Number(process.argv[2] ?? 200);
const manifest = (name: string, source: string, bindings?: Record<string, unknown>) => stringify({
  apiVersion: 'edge.isolates.dev/v1alpha1', kind: 'EdgeWorker', metadata: { name, namespace: 'b' },
  spec: { routes: [{ host: `${name}.b.test` }], placement: { minWarmIsolates: 1 }, ...(bindings ? { bindings } : {}), source: { inline: source } },
});
const dir = mkdtempSync(join(tmpdir(), 'dynprobe-'));
writeFileSync(join(dir, 'w.yaml'), [
  manifest('loader', LOADER_SOURCE, { workerLoaders: [{ name: 'LOADER' }], services: [{ name: 'PLAIN', worker: 'plain' }] }),
  manifest('plain', DYNAMIC_MODULE),
].join('---\n'));
const agent = await Agent.start({
  log: createLogger({}, () => {}, 'error'), source: { kind: 'directory', dir }, agentName: 'probe',
  listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, peerListen: { host: '127.0.0.1', port: 0 },
  presenceTtlMs: 5_000, actorLogReplicas: 1, poolSize: Number(process.env.POOL ?? 8), maxBodyBytes: 1 << 20, maxWebSocketMessageBytes: 1 << 20,
});
const keep = new HttpAgent({ keepAlive: true, maxSockets: 1 });
const get = (path: string): Promise<{ ms: number; parentMs: number; body: string }> => new Promise((resolve, reject) => {
  const t0 = performance.now();
  const req = request({ host: '127.0.0.1', port: agent.port, path, agent: keep, headers: { host: 'loader.b.test' } }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (c: string) => { body += c; });
    res.on('end', () => {
      if (res.statusCode !== 200 || (body !== 'ddddddd' && !path.startsWith('/calls'))) reject(new Error(`${path}: ${res.statusCode} ${body}`));
      else resolve({ ms: performance.now() - t0, parentMs: Number(res.headers['x-parent-ms'] ?? NaN), body });
    });
  });
  req.on('error', reject);
  req.end();
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
for (let i = 0; i < 30; i++) { await get('/noop'); await get('/get'); await get('/svc'); await get('/load'); await sleep(20); }
const paths = ['/noop', '/load', '/get', '/svc'];
const http: Record<string, number[]> = {};
const inParent: Record<string, number[]> = {};
for (let i = 0; i < rounds; i++) {
  // In pairs after a pause, each half first in turn: the pool's refill after a load() lands in neither.
  for (const pair of [['/noop', '/load'], ['/get', '/svc']]) {
    await sleep(25);
    for (const p of i % 2 === 0 ? pair : [pair[1]!, pair[0]!]) {
      const r = await get(p);
      (http[p] ??= []).push(r.ms);
      (inParent[p] ??= []).push(r.parentMs);
    }
  }
}
const f = (x: number) => x.toFixed(3);
for (const p of paths) {
  const s = summarize(http[p]!);
  const q = summarize(inParent[p]!.filter((x) => Number.isFinite(x)));
  console.log(`${p.padEnd(14)} http p50 ${f(s.p50)} p99 ${f(s.p99)} mean ${f(s.mean)} | in parent p50 ${f(q.p50)} mean ${f(q.mean)}`);
}
const hp = (p: string) => summarize(http[p]!).p50;
console.log(`load() over noop (http p50 diff) ${f(hp('/load') - hp('/noop'))} ms; get() over svc ${f(hp('/get') - hp('/svc'))} ms; get over noop ${f(hp('/get') - hp('/noop'))}`);
// Paired differences, round by round: less noise than a difference of medians.
const paired = (a: string, b: string) => summarize(http[a]!.map((x, i) => x - http[b]![i]!)).p50;
console.log(`paired p50: load-noop ${f(paired('/load', '/noop'))}, get-svc ${f(paired('/get', '/svc'))}, get-noop ${f(paired('/get', '/noop'))}`);
const over: number[] = [];
for (let i = 0; i < 40; i++) {
  const r = JSON.parse((await get('/calls?n=20')).body) as { getMs: number; svcMs: number };
  over.push(r.getMs - r.svcMs);
}
console.log(`in parent, 20 interleaved calls per request: get() warm over deployed p50 ${f(summarize(over).p50)} ms (mean ${f(summarize(over).mean)})`);
console.log(`in parent: load() to first response mean ${f(summarize(inParent['/load']!).mean)} ms (1 ms clock)`);
if (process.env.RSS) {
  const n = Number(process.env.RSS);
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.(); await sleep(500); gc?.();
  const before = process.memoryUsage().rss;
  for (let i = 0; i < n; i++) await get(`/get?id=rss-${i}`);
  gc?.(); await sleep(1000); gc?.();
  const after = process.memoryUsage().rss;
  console.log(`RSS per cached dynamic worker: ${f((after - before) / n / 2 ** 20)} MiB over ${n}`);
}
keep.destroy();
await agent.stop();
rmSync(dir, { recursive: true, force: true });
// Phase figures when node-agent/ is instrumented by hand (globalThis.__PH, __PL, __PC: see the report of issue 16's speed work).
const PH = (globalThis as unknown as { __PH?: number[][] }).__PH;
if (PH) {
  const med = (k: number) => summarize(PH.map((r) => r[k]!)).p50.toFixed(3);
  console.log(`load phases p50 over ${PH.length}: compile ${med(1)} instantiate ${med(2)} evaluate ${med(3)} init ${med(4)}`);
}
const PL = (globalThis as unknown as { __PL?: number[][] }).__PL;
const PC = (globalThis as unknown as { __PC?: number[] }).__PC;
if (PL && PC) console.log(`host: definition p50 ${summarize(PL.map((r) => r[0]!)).p50.toFixed(3)} router.load p50 ${summarize(PL.map((r) => r[1]!)).p50.toFixed(3)} first call p50 ${summarize((PC as unknown as number[][]).filter((r) => r[0] === 1).map((r) => r[1]!)).p50.toFixed(3)} warm call p50 ${summarize((PC as unknown as number[][]).filter((r) => r[0] === 0).map((r) => r[1]!)).p50.toFixed(3)}`);
