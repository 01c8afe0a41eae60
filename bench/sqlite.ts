// SQLite-backed actors, in process (no NATS): what an activation costs (compiling and
// instantiating sql.js's WebAssembly in the actor's isolate, opening the database), an
// INSERT (in the isolate alone, and one per actor call with its log entry handed to the
// host), replay speed (log entries per second on a new activation) and a snapshot.
// `npx tsx bench/sqlite.ts` (run with --no-node-snapshot, as isolated-vm needs:
// NODE_OPTIONS=--no-node-snapshot). Prints one JSON line.
import type { ActorState } from '../common/actor-ops.js';
import { ActorIsolate, type ActorDefinition } from '../node-agent/actors/isolate.js';
import { SqlActorStorage } from '../node-agent/bindings/sql-storage.js';
import { hostBindings } from '../node-agent/bindings/host-bindings.js';
import { IsolatePool } from '../node-agent/isolate/pool.js';

const SOURCE = `
export class Db {
  constructor(state) { this.sql = state.storage.sql; this.sql.exec('CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT, at TEXT)'); }
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === '/insert') { this.sql.exec("INSERT INTO t (v, at) VALUES (?, datetime('now'))", 'value-' + url.search); return new Response('ok'); }
    if (url.pathname === '/loop') {
      const n = Number(url.searchParams.get('n'));
      const t0 = performance.now();
      for (let i = 0; i < n; i++) this.sql.exec("SELECT v FROM t WHERE id = ?", i);
      const t1 = performance.now();
      return new Response(String(t1 - t0));
    }
    return new Response(String(this.sql.exec('SELECT count(*) AS n FROM t').one().n));
  }
}
export default { fetch() { return new Response(''); } };`;

const ID = 'a'.repeat(64);
const def: ActorDefinition = {
  worker: { key: 'bench/sqlite', name: 'sqlite', source: SOURCE, digest: 'sha256:bench', limits: { cpuMsPerRequest: 30_000, memoryMiB: 256, subrequests: 50, wallMsPerRequest: 60_000 }, env: { text: {} } },
  className: 'Db', actor: 'bench/sqlite', sqlite: true,
};
const pct = (xs: number[], p: number) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]!; };
const req = (path: string) => ({ url: `http://a${path}`, method: 'GET', headers: [] as [string, string][], body: null });

async function main(): Promise<void> {
  const pool = new IsolatePool({ size: 2, defaultMemoryMiB: 256 });
  await pool.start();
  const hooks = { bindings: hostBindings({}), onLog: () => {}, onDispose: () => {} };
  let state: ActorState = { values: new Map(), alarm: null };
  const activate = async (snapshotLogEntries = 1_000_000) => {
    const storage = new SqlActorStorage(state, { maxBytes: 1 << 30, actor: 'bench', snapshotLogEntries, snapshotLogBytes: 1 << 30 });
    const t0 = performance.now();
    const a = await ActorIsolate.activate(def, { id: ID, storage }, pool.take(256), hooks);
    const ms = performance.now() - t0;
    storage.takePending();
    return { a, storage, ms };
  };

  // Activation of an empty database, several times (the first includes lazy compilation of the shim paths).
  const activations: number[] = [];
  for (let i = 0; i < 6; i++) { const x = await activate(); activations.push(x.ms); x.a.dispose('replaced'); }

  // The same activation of a KV-backed class with no SQL: what the database adds is the difference.
  const kvDef: ActorDefinition = { ...def, sqlite: false, worker: { ...def.worker, source: 'export class Db { async fetch() { return new Response(""); } }' } };
  const kvActivations: number[] = [];
  const { ActorStorage } = await import('../node-agent/bindings/actor-storage.js');
  for (let i = 0; i < 6; i++) {
    const t0 = performance.now();
    const x = await ActorIsolate.activate(kvDef, { id: ID, storage: new ActorStorage({ values: new Map(), alarm: null }, { maxBytes: 1 << 20, actor: 'kv' }) }, pool.take(256), hooks);
    kvActivations.push(performance.now() - t0);
    x.dispose('replaced');
  }

  // One INSERT per actor call, its log entry taken as the host's commit would.
  const { a, storage } = await activate();
  const calls: number[] = [];
  const N = 3000;
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    await a.fetch(req(`/insert?${i}`));
    storage.takePending();
    calls.push(performance.now() - t0);
  }
  const loop = Number(new TextDecoder().decode((await a.fetch(req('/loop?n=20000'))).body));
  state = storage.snapshot();
  a.dispose('replaced');

  // Replay: a new activation rebuilt from the log of N entries (+ the CREATE).
  const replayed = await activate();
  const replayMs = replayed.ms - pct(activations, 0.5);
  // Snapshot: the database file out of the isolate, then an activation from it (no log).
  const t0 = performance.now();
  await replayed.a.prepareSnapshot?.();
  const exportMs = performance.now() - t0;
  replayed.a.dispose('replaced');
  console.log(JSON.stringify({
    activationMs: { p50: pct(activations, 0.5), min: Math.min(...activations), kvClassP50: pct(kvActivations, 0.5), kvClassMin: Math.min(...kvActivations) },
    insertCallMs: { p50: pct(calls, 0.5), p99: pct(calls, 0.99), callsPerSec: Math.round(N / (calls.reduce((x, y) => x + y, 0) / 1000)) },
    selectInIsolateUs: (loop * 1000) / 20000,
    replay: { entries: N + 1, ms: Math.round(replayMs), entriesPerSec: Math.round((N + 1) / (replayMs / 1000)) },
    snapshotExportMs: exportMs,
  }));
  process.exit(0);
}

void main();
