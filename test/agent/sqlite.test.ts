import { afterAll, describe, expect, it } from 'vitest';
import type { ActorState, StorageOp } from '../../common/actor-ops.js';
import { ActorIsolate, type ActorDefinition } from '../../node-agent/actors/isolate.js';
import { SqlActorStorage, SQL_DB_KEY, SQL_LOG_PREFIX } from '../../node-agent/bindings/sql-storage.js';
import { ActorIds } from '../../node-agent/bindings/actor-id.js';
import { actorPool, applyOps, emptyState, request, testHooks, text, workerDef } from '../unit/shim/run-actor.js';

// SQLite-backed actors (spec.storage.backend: sqlite) in real isolates: sql.js runs in the
// actor's own isolate; every statement that wrote is a log entry of the request's commit,
// and a new activation rebuilt from snapshot + log holds exactly the same database.

const ID = new ActorIds('5q1-uid').idFromName('db').hex;
const live: ActorIsolate[] = [];
afterAll(() => { for (const a of live) a.dispose('shutdown'); });

/** An actor class whose fetch runs the request body as the body of an async function (sql, storage, state). */
const EVAL_ACTOR = `
export class Db {
  constructor(state, env) { this.state = state; }
  async fetch(request) {
    const state = this.state, storage = state.storage;
    const body = await request.text();
    try {
      const sql = storage.sql;
      const value = await (new Function('state', 'storage', 'sql', 'return (async () => {' + body + '})()'))(state, storage, sql);
      return new Response(JSON.stringify({ value: value === undefined ? null : value }, (k, v) => typeof v === 'bigint' ? String(v) : v instanceof ArrayBuffer ? { bytes: [...new Uint8Array(v)] } : v));
    } catch (err) {
      return new Response(JSON.stringify({ error: { name: String(err?.name), message: String(err?.message) } }));
    }
  }
  async alarm() {}
}
export default { fetch() { return new Response('not an actor'); } };`;

interface Outcome { value?: unknown; error?: { name: string; message: string } }

/** One actor with a durable log kept in memory: the committed state after each event, as the agent's log holds it. */
class Harness {
  committed: ActorState = emptyState();
  commits: StorageOp[][] = [];
  a!: ActorIsolate;
  storage!: SqlActorStorage;
  constructor(readonly def: ActorDefinition, readonly opts: { snapshotLogEntries?: number; maxEntryBytes?: number } = {}) {}

  async activate(): Promise<void> {
    const p = await actorPool();
    this.storage = new SqlActorStorage(this.committed, { maxBytes: 10 * 1024 * 1024, actor: 'test/db', ...this.opts });
    this.a = await ActorIsolate.activate(this.def, { id: ID, storage: this.storage }, p.take(this.def.worker.limits.memoryMiB), testHooks());
    live.push(this.a);
    this.commit();
  }

  commit(): void {
    const ops = this.storage.takePending();
    if (ops.length > 0) this.commits.push(ops);
    this.committed = applyOps(this.committed, ops);
  }

  async run(body: string): Promise<Outcome> {
    try {
      const res = await this.a.fetch(request('http://actor/', { method: 'POST', body }));
      this.commit();
      if (this.storage.wantsCompaction()) {
        await this.a.prepareSnapshot();
        this.committed = this.storage.snapshot();
      }
      return JSON.parse(text(res)) as Outcome;
    } catch (err) {
      this.storage.discardPending();
      throw err;
    }
  }

  async value(body: string): Promise<unknown> {
    const r = await this.run(body);
    if (r.error) throw new Error(`${r.error.name}: ${r.error.message}`);
    return r.value;
  }

  async error(body: string): Promise<{ name: string; message: string }> {
    const r = await this.run(body);
    if (!r.error) throw new Error(`expected an error, got ${JSON.stringify(r.value)}`);
    return r.error;
  }

  /** Drops the activation and builds a new one from the committed state (what the next owner does). */
  async restart(): Promise<void> {
    this.a.dispose('replaced');
    await this.activate();
  }
}

const def = (limits = {}): ActorDefinition => ({ worker: workerDef(EVAL_ACTOR, { limits }), className: 'Db', actor: 'test/db', sqlite: true });

describe('SQLite-backed actor: the cursor API', () => {
  it('exec, toArray, one, raw, iteration, columnNames, rowsRead/rowsWritten, databaseSize', async () => {
    const h = new Harness(def());
    await h.activate();
    expect(await h.value(`
      sql.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB)');
      const c = sql.exec('INSERT INTO t (name, data) VALUES (?, ?), (?, ?)', 'a', new Uint8Array([1, 2]), 'b', null);
      return { written: c.rowsWritten, cols: c.columnNames };
    `)).toEqual({ written: 2, cols: [] });
    expect(await h.value(`
      const c = sql.exec('SELECT id, name, data FROM t ORDER BY id');
      const cols = c.columnNames;
      const rows = c.toArray();
      return { cols, rows, read: c.rowsRead };
    `)).toEqual({ cols: ['id', 'name', 'data'], rows: [{ id: 1, name: 'a', data: { bytes: [1, 2] } }, { id: 2, name: 'b', data: null }], read: 2 });
    expect(await h.value(`return sql.exec('SELECT name FROM t WHERE id = ?', 2).one();`)).toEqual({ name: 'b' });
    expect(await h.value(`return [...sql.exec('SELECT id, name FROM t ORDER BY id').raw()];`)).toEqual([[1, 'a'], [2, 'b']]);
    expect(await h.value(`const out = []; for (const r of sql.exec('SELECT name FROM t ORDER BY id')) out.push(r.name); return out;`)).toEqual(['a', 'b']);
    expect(await h.error(`return sql.exec('SELECT * FROM t WHERE id = 99').one();`)).toMatchObject({ message: 'Expected exactly one result from SQL query, but got no results.' });
    expect(await h.error(`return sql.exec('SELECT * FROM t').one();`)).toMatchObject({ message: 'Expected exactly one result from SQL query, but got multiple results.' });
    const size = await h.value('return sql.databaseSize;') as number;
    expect(size).toBeGreaterThan(0);
    expect(size % 4096).toBe(0);
    // A SQL error is an exception the caller catches, with SQLite's message and code.
    expect(await h.error(`sql.exec('SELECT * FROM nope');`)).toMatchObject({ name: 'Error', message: 'no such table: nope: SQLITE_ERROR' });
    // Bindings: the last statement's, exactly as many as it takes (workerd's wording).
    expect(await h.error(`sql.exec('SELECT ?; SELECT 1', 1);`)).toMatchObject({ message: 'When executing multiple SQL statements in a single call, only the last statement can have parameters.' });
    expect(await h.error(`sql.exec('SELECT ?, ?', 1);`)).toMatchObject({ message: 'Wrong number of parameter bindings for SQL query.' });
    expect(await h.error(`sql.exec('SELECT 1', 1);`)).toMatchObject({ message: 'Wrong number of parameter bindings for SQL query.' });
    expect(await h.value(`return sql.exec("SELECT ?2 AS b, ?1 AS a, :x AS x, :x AS y, '?' AS q -- ?", 'one', 'two', 'three').one();`)).toEqual({ b: 'two', a: 'one', x: 'three', y: 'three', q: '?' });
    // Rebuilt from the log: the same rows.
    await h.restart();
    expect(await h.value(`return sql.exec('SELECT id, name FROM t ORDER BY id').toArray();`)).toEqual([{ id: 1, name: 'a' }, { id: 2, name: 'b' }]);
  });
});

describe('SQLite-backed actor: a `process` global (nodejs_compat, or the worker\'s own)', () => {
  // sql.js takes any global `process.versions.node` for Node and then require()s node:fs.
  it.each([
    ['with nodejs_compat', EVAL_ACTOR, ['nodejs_compat']],
    ['defined by the worker', `globalThis.process = { versions: { node: '20.0.0' }, argv: ['node', 'worker'] };\n${EVAL_ACTOR}`, []],
  ])('opens the database %s, and leaves the global as it was', async (_what, source, flags) => {
    const h = new Harness({ worker: { ...workerDef(source), compatibilityFlags: flags }, className: 'Db', actor: 'test/db', sqlite: true });
    await h.activate();
    expect(await h.value(`sql.exec('CREATE TABLE t (x)'); sql.exec('INSERT INTO t VALUES (41)'); return sql.exec('SELECT x + 1 AS y FROM t').one();`)).toEqual({ y: 42 });
    expect(await h.value('return typeof process.versions.node;')).toBe('string');
    await h.restart();
    expect(await h.value(`return sql.exec('SELECT x FROM t').one();`)).toEqual({ x: 41 });
  });
});

describe('SQLite-backed actor: transactions, KV on the same database, determinism', () => {
  it('transactionSync commits together and rolls back on throw (statements and their log entries)', async () => {
    const h = new Harness(def());
    await h.activate();
    await h.value(`sql.exec('CREATE TABLE acct (name TEXT PRIMARY KEY, bal INTEGER NOT NULL CHECK (bal >= 0))'); sql.exec("INSERT INTO acct VALUES ('a', 10), ('b', 0)");`);
    // A transfer that would overdraw: the first UPDATE is undone with the second's failure.
    expect(await h.value(`
      try {
        storage.transactionSync(() => {
          sql.exec("UPDATE acct SET bal = bal + 20 WHERE name = 'b'");
          sql.exec("UPDATE acct SET bal = bal - 20 WHERE name = 'a'");
        });
        return 'committed';
      } catch (e) { return 'rolled back: ' + e.message; }
    `)).toBe('rolled back: CHECK constraint failed: bal >= 0: SQLITE_CONSTRAINT');
    // A JavaScript throw rolls back too; a value returned is transactionSync's result.
    expect(await h.value(`
      try { storage.transactionSync(() => { sql.exec("UPDATE acct SET bal = 99"); throw new Error('changed my mind'); }); } catch (e) {}
      return storage.transactionSync(() => { sql.exec("UPDATE acct SET bal = bal - 5 WHERE name = 'a'"); sql.exec("UPDATE acct SET bal = bal + 5 WHERE name = 'b'"); return 'ok'; });
    `)).toBe('ok');
    const expected = [{ name: 'a', bal: 5 }, { name: 'b', bal: 5 }];
    expect(await h.value(`return sql.exec('SELECT * FROM acct ORDER BY name').toArray();`)).toEqual(expected);
    await h.restart();
    expect(await h.value(`return sql.exec('SELECT * FROM acct ORDER BY name').toArray();`)).toEqual(expected);
  });

  it('the async and synchronous KV APIs and alarms live in the same database and commit', async () => {
    const h = new Harness(def());
    await h.activate();
    expect(await h.value(`
      await storage.put('k1', { nested: [1, 2n, new Date(5)] });
      await storage.put({ k2: 'two', k3: new Uint8Array([3]) });
      storage.kv.put('k4', 4);
      await storage.setAlarm(Date.now() + 3_600_000);
      const listed = [...(await storage.list({ prefix: 'k', reverse: true, limit: 3 })).keys()];
      return { k1: (await storage.get('k1')).nested.length, k4: storage.kv.get('k4'), listed, sync: [...storage.kv.list({ start: 'k2', end: 'k4' })].map(([k]) => k), deleted: await storage.delete(['k3', 'nope']) };
    `)).toEqual({ k1: 3, k4: 4, listed: ['k4', 'k3', 'k2'], sync: ['k2', 'k3'], deleted: 1 });
    // The tenant's SQL cannot see the KV table.
    expect(await h.error(`return sql.exec('SELECT * FROM _cf_KV').toArray();`)).toMatchObject({ message: 'access to _cf_KV is prohibited: SQLITE_AUTH' });
    expect(h.committed.alarm).not.toBeNull();
    await h.restart();
    expect(await h.value(`return { k1: (await storage.get('k1')).nested[1] === 2n, k2: await storage.get('k2'), k3: (await storage.get('k3')) ?? null, alarm: (await storage.getAlarm()) !== null };`))
      .toEqual({ k1: true, k2: 'two', k3: null, alarm: true });
    // A transaction() that throws undoes its KV writes (and its SQL).
    await h.value(`try { await storage.transaction(async (txn) => { await txn.put('k2', 'changed'); sql.exec('CREATE TABLE x (a)'); throw new Error('no'); }); } catch {}`);
    expect(await h.value(`return { k2: await storage.get('k2'), x: sql.exec("SELECT count(*) AS n FROM sqlite_master WHERE name = 'x'").one().n };`)).toEqual({ k2: 'two', x: 0 });
  });

  it("random(), randomblob() and 'now' replay to the values they first had", async () => {
    const h = new Harness(def());
    await h.activate();
    const first = await h.value(`
      sql.exec('CREATE TABLE r (a, b, c, d)');
      sql.exec("INSERT INTO r VALUES (random(), hex(randomblob(8)), datetime('now', 'subsec'), abs(random()) % 1000)");
      await new Promise((r) => setTimeout(r, 5));
      sql.exec("INSERT INTO r SELECT random(), hex(randomblob(4)), CURRENT_TIMESTAMP, unixepoch('subsec') FROM r");
      return sql.exec('SELECT * FROM r').raw().toArray();
    `);
    await h.restart();
    expect(await h.value(`return sql.exec('SELECT * FROM r').raw().toArray();`)).toEqual(first);
  });
});

describe('SQLite-backed actor: what Workers refuses, and its limits', () => {
  it('refuses transactions in SQL, ATTACH, PRAGMAs off the list and _cf_ tables; each a catchable error, nothing committed lost', async () => {
    const h = new Harness(def());
    await h.activate();
    await h.value(`sql.exec('CREATE TABLE keep (v)'); sql.exec('INSERT INTO keep VALUES (1)');`);
    const refused = await h.value(`
      const out = {};
      const t = (name, q) => { try { sql.exec(q); out[name] = 'ran'; } catch (e) { out[name] = e.message; } };
      t('begin', 'BEGIN TRANSACTION');
      t('savepoint', 'SAVEPOINT x');
      t('commit', '  commit');
      t('attach', "ATTACH DATABASE 'other.db' AS other");
      t('pragma', 'PRAGMA writable_schema = ON');
      t('pragmaOk', 'PRAGMA table_info(keep)');
      t('cf', 'CREATE TABLE "_CF_mine" (a)');
      t('cfLater', 'INSERT INTO keep VALUES (2); DROP TABLE _cf_KV');
      // The same table reached by quoting, a schema name, a trigger or a view: all refused.
      out.sneaky = ['SELECT * FROM [_cf_KV]', 'SELECT * FROM main."_cf_kv"', 'SELECT * FROM \`_CF_KV\`',
        'CREATE TRIGGER t AFTER INSERT ON keep BEGIN DELETE FROM _cf_KV; END', 'CREATE VIEW v AS SELECT * FROM /* x */ _cf_KV']
        .map((q) => { try { sql.exec(q); return 'ran: ' + q; } catch (e) { return e.message.endsWith('is prohibited: SQLITE_AUTH') ? 'refused' : e.message; } });
      return out;
    `) as Record<string, string> & { sneaky: string[] };
    expect(refused.begin).toMatch(/^To execute a transaction, please use the state.storage.transaction\(\) or state.storage.transactionSync\(\) APIs/);
    expect(refused.savepoint).toBe(refused.begin);
    expect(refused.commit).toBe(refused.begin);
    expect(refused.attach).toBe('not authorized: SQLITE_AUTH');
    expect(refused.pragma).toBe('not authorized: SQLITE_AUTH');
    expect(refused.pragmaOk).toBe('ran');
    expect(refused.cf).toBe('access to _CF_mine is prohibited: SQLITE_AUTH');
    // Statements before a refused one in the same exec ran (and were logged), as in SQLite's own multi-statement exec.
    expect(refused.cfLater).toBe('access to _cf_KV is prohibited: SQLITE_AUTH');
    expect(refused.sneaky).toEqual(['refused', 'refused', 'refused', 'refused', 'refused']);
    await h.restart();
    expect(await h.value(`return sql.exec('SELECT v FROM keep ORDER BY v').raw().toArray();`)).toEqual([[1], [2]]);
  });

  it('statement length, bindings, value size and database size limits are errors the caller catches', async () => {
    const h = new Harness(def({ memoryMiB: 128 }));
    await h.activate();
    await h.value(`sql.exec('CREATE TABLE big (v)'); sql.exec('INSERT INTO big VALUES (1)');`);
    const out = await h.value(`
      const out = {};
      const t = (name, f) => { try { f(); out[name] = 'ran'; } catch (e) { out[name] = e.name + ': ' + e.message; } };
      t('longStatement', () => sql.exec('SELECT 1' + ' '.repeat(100_001)));
      t('bindings', () => sql.exec('SELECT 1', ...new Array(101).fill(1)));
      t('bigString', () => sql.exec('INSERT INTO big VALUES (?)', 'x'.repeat(2 * 1024 * 1024 + 1)));
      t('bigBlob', () => sql.exec('INSERT INTO big VALUES (?)', new Uint8Array(2 * 1024 * 1024 + 1)));
      t('badType', () => sql.exec('INSERT INTO big VALUES (?)', {}));
      // Past the database cap (spec.storage.maxBytesPerActor, 10 MiB here): SQLite refuses the statement whole.
      t('full', () => sql.exec('INSERT INTO big SELECT zeroblob(1024 * 1024) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20) SELECT x FROM c)'));
      out.rows = sql.exec('SELECT count(*) AS n FROM big').one().n;
      return out;
    `) as Record<string, string | number>;
    expect(out.longStatement).toMatch(/^RangeError: statement too long: SQLITE_TOOBIG/);
    expect(out.bindings).toMatch(/^RangeError: too many SQL variables/);
    expect(out.bigString).toMatch(/^RangeError: string or blob too big: SQLITE_TOOBIG/);
    expect(out.bigBlob).toMatch(/^RangeError: string or blob too big: SQLITE_TOOBIG/);
    expect(out.badType).toMatch(/^TypeError: Wrong type for binding 1/);
    expect(out.full).toBe('Error: database or disk is full: SQLITE_FULL');
    expect(out.rows).toBe(1);
    await h.restart();
    expect(await h.value(`return sql.exec('SELECT count(*) AS n FROM big').one().n;`)).toBe(1);
  });

  it('a statement whose log entry could not be one durable commit (NATS max_payload) is refused before it runs', async () => {
    const h = new Harness(def(), { maxEntryBytes: 64 * 1024 });
    await h.activate();
    await h.value(`sql.exec('CREATE TABLE b (v)'); sql.exec('INSERT INTO b VALUES (1)');`);
    const out = await h.value(`
      const out = {};
      try { sql.exec('INSERT INTO b VALUES (?)', new Uint8Array(100 * 1024)); out.sql = 'ran'; } catch (e) { out.sql = e.name + ': ' + e.message; }
      try { await storage.put('big', 'x'.repeat(100 * 1024)); out.kv = 'ran'; } catch (e) { out.kv = e.name + ': ' + e.message; }
      sql.exec('INSERT INTO b VALUES (?)', new Uint8Array(10 * 1024));
      return out;
    `) as Record<string, string>;
    expect(out.sql).toMatch(/^RangeError: string or blob too big: SQLITE_TOOBIG .*one durable write holds at most 65536/);
    expect(out.kv).toMatch(/^RangeError: string or blob too big/);
    await h.restart();
    expect(await h.value(`return [sql.exec('SELECT count(*) AS n FROM b').one().n, (await storage.get('big')) ?? null];`)).toEqual([2, null]);
  });

  it('ctx.storage.sql on a KV-backed class throws as workerd does', async () => {
    const p = await actorPool();
    const { ActorStorage } = await import('../../node-agent/bindings/actor-storage.js');
    const storage = new ActorStorage(emptyState(), { maxBytes: 1 << 20, actor: 'test/kv' });
    const a = await ActorIsolate.activate({ worker: workerDef(EVAL_ACTOR), className: 'Db', actor: 'test/kv' }, { id: ID, storage }, p.take(128), testHooks());
    live.push(a);
    const r = JSON.parse(text(await a.fetch(request('http://actor/', { method: 'POST', body: 'return 1;' })))) as Outcome;
    expect(r.error).toMatchObject({ message: 'SQL is not enabled for this Durable Object class.' });
    a.dispose('shutdown');
  });
});

describe('SQLite-backed actor: snapshots keep replay bounded', () => {
  it('after a snapshot a new activation replays only the log after it, and holds the same database', async () => {
    const h = new Harness(def(), { snapshotLogEntries: 25 });
    await h.activate();
    await h.value(`sql.exec('CREATE TABLE n (i INTEGER PRIMARY KEY, r)');`);
    for (let i = 1; i <= 30; i++) await h.value(`sql.exec('INSERT INTO n VALUES (?, random())', ${i});`);
    const before = await h.value(`return sql.exec('SELECT * FROM n').raw().toArray();`);
    const keys = [...h.committed.values.keys()];
    expect(keys).toContain(SQL_DB_KEY);
    const tail = keys.filter((k) => k.startsWith(SQL_LOG_PREFIX));
    expect(tail.length).toBeLessThan(25);
    await h.restart();
    expect(h.storage.lastReplay.entries).toBe(tail.length);
    expect(h.storage.lastReplay.snapshotBytes).toBeGreaterThan(0);
    expect(await h.value(`return sql.exec('SELECT * FROM n').raw().toArray();`)).toEqual(before);
  });
});

describe('SQLite-backed actor: opening the database is the platform\'s work', () => {
  it('is not charged to the constructor or the first request: with the default 50 ms CPU limit an actor activates, replays and answers', async () => {
    // Compiling and instantiating SQLite's module and opening the database takes more CPU
    // than 50 ms (bench/sqlite.ts): charged to the constructor, the activation would fail.
    const h = new Harness(def({ cpuMsPerRequest: 50 }));
    await h.activate();
    await h.value(`sql.exec('CREATE TABLE t (v)'); sql.exec('INSERT INTO t VALUES (1), (2)');`);
    await h.restart();
    expect(await h.value(`return sql.exec('SELECT count(*) AS n FROM t').one().n;`)).toBe(2);
  });
});

describe('SQLite-backed actor: hostile queries hurt only their actor', () => {
  it('a runaway recursive CTE is stopped by the CPU limit while another isolate keeps answering; the database is intact after', async () => {
    const h = new Harness(def({ cpuMsPerRequest: 300, wallMsPerRequest: 5000 }));
    await h.activate();
    await h.value(`sql.exec('CREATE TABLE keep (v)'); sql.exec('INSERT INTO keep VALUES (42)');`);
    const p = await actorPool();
    const { WorkerIsolate } = await import('../../node-agent/isolate/worker-isolate.js');
    let n = 0;
    const other = await WorkerIsolate.load(workerDef('export default { fetch() { return new Response("healthy"); } }', { name: 'neighbour' }), p.take(128), testHooks());
    try {
      let done = false;
      let answered = 0;
      const neighbour = (async () => {
        while (!done) {
          const { id, response } = other.begin({ url: 'http://n/', method: 'GET', headers: [], body: null });
          const res = await response;
          await other.finish(id);
          if (res.status === 200) answered += 1;
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
      const runaway = h.a.fetch(request('http://actor/', { method: 'POST', body: `return sql.exec('WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c').one();` }));
      const outcome = await runaway.then(() => 'answered', (err: Error) => `${err.name}: ${err.message}`);
      done = true;
      await neighbour;
      n = answered;
      expect(outcome).toMatch(/^WorkerLimitError: .*CPU/);
      expect(h.a.dead).toBe(true);
    } finally {
      other.dispose('shutdown');
    }
    // The neighbour answered all the while the query ran (its isolate, and the agent's thread, were never blocked).
    expect(n).toBeGreaterThan(3);
    h.storage.discardPending();
    await h.activate();
    expect(await h.value(`return sql.exec('SELECT v FROM keep').one().v;`)).toBe(42);
  });

  it('memory bombs: SQLite out of memory is a catchable error; a result too big for the heap costs the actor its isolate, nothing committed', async () => {
    const h = new Harness(def({ memoryMiB: 64, cpuMsPerRequest: 10_000 }));
    await h.activate();
    await h.value(`sql.exec('CREATE TABLE keep (v)'); sql.exec('INSERT INTO keep VALUES (7)');`);
    // A value past what the actor's WebAssembly memory (its memory limit) can hold.
    const oom = await h.error(`sql.exec('INSERT INTO keep VALUES (8)'); return sql.exec('SELECT hex(zeroblob(100000000)) AS h').one().h.length;`);
    expect(oom.message).toMatch(/out of memory|too big/);
    // 200 rows of 1 MB each, gathered into the JavaScript heap.
    const bomb = h.a.fetch(request('http://actor/', { method: 'POST', body: `return sql.exec('WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200) SELECT zeroblob(1000000) AS z FROM c').toArray().length;` }));
    const outcome = await bomb.then((r) => text(r), (err: Error) => err.name);
    // Either V8 refuses the allocation (a RangeError the actor's code could catch) or the
    // isolate is disposed for its memory limit; the agent and other isolates are untouched.
    expect(outcome).toMatch(/^WorkerLimitError$|"name":"RangeError","message":"Array buffer allocation failed"/);
    if (h.a.dead) {
      h.storage.discardPending();
      await h.activate();
    } else {
      h.commit();
      expect(await h.value(`return sql.exec('SELECT v FROM keep ORDER BY v').raw().toArray();`)).toEqual([[7], [8]]);
      await h.restart();
    }
    expect(await h.value(`return sql.exec('SELECT v FROM keep ORDER BY v').raw().toArray();`)).toEqual([[7], [8]]);
  });
});

describe('public code: durable-utils SQL migrations, bundled unmodified', () => {
  it('runs its migrations once, keeps their data across activations, and applies a new one on the next version', async () => {
    const { bundleWorker } = await import('../../cli/deploy.js');
    const { fileURLToPath } = await import('node:url');
    const bundled = await bundleWorker(fileURLToPath(new URL('./fixtures/sql-migrations-actor.js', import.meta.url)));
    if (!('code' in bundled)) throw new Error(bundled.errors);
    const v1: ActorDefinition = { worker: workerDef(bundled.code), className: 'NotesV1', actor: 'test/notes', sqlite: true };
    const h = new Harness(v1);
    await h.activate();
    const call = async (path: string) => {
      const res = await h.a.fetch(request(`http://actor${path}`));
      h.commit();
      return JSON.parse(text(res)) as { ran: { rowsRead: number; rowsWritten: number }; columns: string[]; notes: Record<string, unknown>[]; last: number };
    };
    const first = await call('/add?body=hello');
    expect(first.columns).toEqual(['id', 'body', 'created_at']);
    expect(first.notes).toEqual([{ id: 1, body: 'hello', created_at: '2024-01-01' }]);
    expect(first.last).toBe(2);
    await h.restart();
    const again = await call('/add?body=world');
    expect(again.ran).toEqual({ rowsRead: 0, rowsWritten: 0 });
    expect(again.notes.map((n) => n.body)).toEqual(['hello', 'world']);
    // The next version of the class adds a migration: only it runs, on the same database.
    h.a.dispose('replaced');
    const h2 = Object.assign(new Harness({ ...v1, className: 'NotesV2' }), { committed: h.committed });
    await h2.activate();
    const res = await h2.a.fetch(request('http://actor/'));
    h2.commit();
    const v2 = JSON.parse(text(res)) as typeof first;
    expect(v2.columns).toEqual(['id', 'body', 'created_at', 'tag']);
    expect(v2.notes.map((n) => n.tag)).toEqual(['old', 'old']);
    expect(v2.last).toBe(3);
    await h2.restart();
    const r2 = JSON.parse(text(await h2.a.fetch(request('http://actor/')))) as typeof first;
    expect(r2).toMatchObject({ last: 3, columns: ['id', 'body', 'created_at', 'tag'] });
  });
});
