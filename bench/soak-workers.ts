import { stringify } from 'yaml';

// The soak's tenants: one healthy worker and the hostile ones of issue 12, each in its own
// namespace, as EdgeWorker manifests for `edge agent --workers DIR`. Every worker states
// its memoryMiB, so the RSS bound (sum of the tenants' memory limits + a fixed base) is
// known before the run.

export type AttackKind =
  | 'cpu' | 'freeze' | 'memory' | 'wasm' | 'timers' | 'websocket' | 'subrequests' | 'egress' | 'slow-body' | 'slow-header';

export interface SoakWorker {
  /** Worker name; also its namespace (`soak-<name>`) and its host (`<name>.soak`). */
  name: string;
  source: string;
  limits: { cpuMsPerRequest?: number; memoryMiB: number; subrequests?: number; wallMsPerRequest?: number };
  minWarmIsolates: number;
  /** What the worker does, for the report. */
  what: string;
}

export const HEALTHY_NAME = 'healthy';
export const namespaceOf = (w: { name: string }): string => `soak-${w.name}`;
export const hostOf = (name: string): string => `${name}.soak`;

const HEALTHY_SOURCE = `
let n = 0;
export default { async fetch() { n += 1; return Response.json({ ok: true, n }); } };
`;

// A module with a memory of 1 page growable to 65,536 pages (4 GiB), exported as `m`, and
// `g(pages)`, which grows it from inside wasm (memory.grow), so a host that only wraps the JS
// WebAssembly.Memory API does not see the growth. Hand-assembled:
// type (i32)->i32; func 0; memory {min 1, max 65536}; exports m, g; code: local.get 0; memory.grow 0.
const WASM_BYTES = [
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x06, 0x01, 0x60, 0x01, 0x7f, 0x01, 0x7f,
  0x03, 0x02, 0x01, 0x00,
  0x05, 0x06, 0x01, 0x01, 0x01, 0x80, 0x80, 0x04,
  0x07, 0x09, 0x02, 0x01, 0x6d, 0x02, 0x00, 0x01, 0x67, 0x00, 0x00,
  0x0a, 0x08, 0x01, 0x06, 0x00, 0x20, 0x00, 0x40, 0x00, 0x0b,
];

/** Egress targets the probe worker fetches, by key; ports are the agent's. */
export interface EgressTargets { status: string; metrics: string; peer: string; front: string; imds: string }

export function egressTargets(ports: { port: number; adminPort: number; peerPort: number }): EgressTargets {
  return {
    status: `http://127.0.0.1:${ports.adminPort}/status`,
    metrics: `http://127.0.0.1:${ports.adminPort}/metrics`,
    peer: `http://127.0.0.1:${ports.peerPort}/`,
    front: `http://127.0.0.1:${ports.port}/`,
    imds: 'http://169.254.169.254/latest/meta-data/',
  };
}

export function soakWorkers(o: { sinkUrl: string; sinkMiB: number; targets: EgressTargets }): SoakWorker[] {
  return [
    {
      name: HEALTHY_NAME, what: 'tiny JSON response (the measured neighbour)', minWarmIsolates: 1,
      limits: { memoryMiB: 32 }, source: HEALTHY_SOURCE,
    },
    {
      name: 'cpu', what: 'spins forever on every request (over its 50 ms CPU limit)', minWarmIsolates: 1,
      limits: { memoryMiB: 32 }, source: 'export default { async fetch() { for (;;) {} } };',
    },
    {
      name: 'freeze', minWarmIsolates: 0, limits: { memoryMiB: 16, cpuMsPerRequest: 1000 },
      what: 'top level spins 950 ms; every request then exceeds its memory, so the next one evaluates the top level again',
      source: `
const t0 = Date.now();
while (Date.now() - t0 < 950) {}
export default { async fetch() { const keep = []; for (;;) keep.push(new Array(1e5).fill(1)); } };
`,
    },
    {
      name: 'memory', what: 'arrays until killed (memoryMiB 32, cpuMsPerRequest 10000)', minWarmIsolates: 1,
      limits: { memoryMiB: 32, cpuMsPerRequest: 10_000 },
      source: 'export default { async fetch() { const keep = []; for (;;) keep.push(new Array(1e6).fill(7)); } };',
    },
    {
      name: 'wasm', minWarmIsolates: 1, limits: { memoryMiB: 32, cpuMsPerRequest: 5000 },
      what: 'grows WebAssembly memories toward 4 GiB in 64 MiB steps, touching every page, kept across requests (JS Memory API and memory.grow from wasm, alternately)',
      source: `
const BYTES = new Uint8Array([${WASM_BYTES.join(',')}]);
const kept = [];
let n = 0;
function touch(buf, from) { const u = new Uint8Array(buf); for (let i = from; i < u.length; i += 4096) u[i] = 1; return u.length; }
export default { async fetch() {
  n += 1;
  let held = 0, why = 'reached 4 GiB';
  try {
    if (n % 2 === 0) {
      const inst = new WebAssembly.Instance(new WebAssembly.Module(BYTES), {});
      kept.push(inst);
      let done = 0;
      while (held < 4096) { if (inst.exports.g(1024) < 0) { why = 'memory.grow returned -1'; break; } held += 64; done = touch(inst.exports.m.buffer, done); }
    } else {
      const mem = new WebAssembly.Memory({ initial: 1, maximum: 65536 });
      kept.push(mem);
      let done = 0;
      while (held < 4096) { mem.grow(1024); held += 64; done = touch(mem.buffer, done); }
    }
  } catch (e) { why = String((e && e.message) || e).slice(0, 120); }
  return new Response('grew ' + held + ' MiB (' + kept.length + ' memories kept): ' + why);
} };
`,
    },
    {
      name: 'timers', minWarmIsolates: 1, limits: { memoryMiB: 16 },
      what: 'each request arms 200 one-hour setTimeouts and clears every third; 1 request in 50 spins past its CPU limit (a fresh isolate)',
      source: `
export default { async fetch(request) {
  if (new URL(request.url).searchParams.has('spin')) for (;;) {}
  const ids = [];
  for (let i = 0; i < 200; i++) ids.push(setTimeout(() => {}, 3600000 + i));
  for (let i = 0; i < ids.length; i += 3) clearTimeout(ids[i]);
  return new Response('armed 200 timers, cleared ' + Math.ceil(ids.length / 3));
} };
`,
    },
    {
      name: 'websocket', minWarmIsolates: 1, limits: { memoryMiB: 32 },
      what: 'accepts a WebSocket and sends 32 x 1000 KiB at once, then 8 x 1000 KiB every 100 ms, to a client that never reads',
      source: `
const CHUNK = 'x'.repeat(1000 * 1024);
export default { async fetch(request) {
  if (request.headers.get('Upgrade') !== 'websocket') return new Response('websocket only', { status: 426 });
  const [client, server] = Object.values(new WebSocketPair());
  server.accept();
  for (let i = 0; i < 32; i++) server.send(CHUNK);
  const timer = setInterval(() => {
    try { for (let i = 0; i < 8; i++) server.send(CHUNK); } catch { clearInterval(timer); }
  }, 100);
  server.addEventListener('close', () => clearInterval(timer));
  server.addEventListener('error', () => clearInterval(timer));
  return new Response(null, { status: 101, webSocket: client });
} };
`,
    },
    {
      name: 'subrequests', minWarmIsolates: 1, limits: { memoryMiB: 64, cpuMsPerRequest: 1000 },
      what: `50 concurrent fetches (its subrequest limit) POSTing 256 KiB each to a local sink that answers ${o.sinkMiB} MiB (bodies left unread), then a 51st`,
      source: `
const BODY = 'y'.repeat(256 * 1024);
export default { async fetch() {
  const one = async () => { const r = await fetch(${JSON.stringify(o.sinkUrl)}, { method: 'POST', body: BODY }); return r.status; };
  const results = await Promise.allSettled(Array.from({ length: 50 }, one));
  let extra;
  try { extra = 'answered ' + await one(); } catch (e) { extra = 'refused: ' + String((e && e.message) || e).slice(0, 80); }
  const ok = results.filter((r) => r.status === 'fulfilled').length;
  const firstError = results.find((r) => r.status === 'rejected');
  return Response.json({ ok, failed: results.length - ok, firstError: firstError ? String(firstError.reason && firstError.reason.message || firstError.reason).slice(0, 120) : null, extra });
} };
`,
    },
    {
      name: 'egress', minWarmIsolates: 1, limits: { memoryMiB: 32 },
      what: "fetches the agent's own /status, /metrics, the peer port, its own front port and 169.254.169.254, and answers what it got",
      source: `
const TARGETS = ${JSON.stringify(o.targets)};
export default { async fetch(request) {
  const key = new URL(request.url).searchParams.get('t');
  const url = TARGETS[key];
  if (!url) return new Response('unknown target', { status: 400 });
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('no answer within 3 s')), 3000));
  try {
    const r = await Promise.race([fetch(url, { headers: { host: 'healthy.soak' } }), timeout]);
    const text = await Promise.race([r.text(), timeout]);
    return Response.json({ target: key, status: r.status, bytes: text.length, head: text.slice(0, 160) });
  } catch (e) {
    return Response.json({ target: key, error: String((e && e.message) || e).slice(0, 160) });
  }
} };
`,
    },
    {
      name: 'slow', minWarmIsolates: 1, limits: { memoryMiB: 32 },
      what: 'reads the whole request body, then answers (the target of the slow-body and slow-header clients)',
      source: 'export default { async fetch(request) { const t = await request.text(); return new Response("read " + t.length); } };',
    },
  ];
}

export function soakManifest(w: SoakWorker): Record<string, unknown> {
  return {
    apiVersion: 'edge.isolates.dev/v1alpha1',
    kind: 'EdgeWorker',
    metadata: { name: w.name, namespace: namespaceOf(w) },
    spec: {
      compatibilityDate: '2025-01-01',
      routes: [{ host: hostOf(w.name) }],
      placement: { minWarmIsolates: w.minWarmIsolates },
      limits: w.limits,
      source: { inline: w.source },
    },
  };
}

export function soakManifests(workers: SoakWorker[]): string {
  return workers.map((w) => stringify(soakManifest(w), { lineWidth: 0 })).join('---\n');
}
