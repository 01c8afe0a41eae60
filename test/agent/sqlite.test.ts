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
    const state = this.state, storage = state.storage, sql = storage.sql;
    const body = await request.text();
    try {
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
  constructor(readonly def: ActorDefinition, readonly opts: { snapshotLogEntries?: number } = {}) {}

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
    // Rebuilt from the log: the same rows.
    await h.restart();
    expect(await h.value(`return sql.exec('SELECT id, name FROM t ORDER BY id').toArray();`)).toEqual([{ id: 1, name: 'a' }, { id: 2, name: 'b' }]);
  });
});
