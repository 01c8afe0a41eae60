// SQLite storage of a SQLite-backed actor (DurableActor spec.storage.backend: sqlite),
// inside the actor's own isolate: sql.js (SQLite compiled to WebAssembly) runs here, so a
// query is synchronous, and a runaway one (a recursive CTE, a cross join, a zeroblob
// bomb) is stopped by this actor's CPU, wall and memory limits like any of its code: V8's
// termination stops WebAssembly too, and the module's memory is bounded by web/wasm.js
// against the actor's memory limit. Nothing of it runs on the agent's thread.
//
// Durability is a statement log with deterministic replay (docs/actors.md, "SQLite"):
// every statement that may write is handed, once it succeeded, to the host
// (host.storage('sqlLog', entry)), which records it with the request's other writes and
// commits them in the one fenced commit of the output gate. An entry carries the SQL,
// its bindings, the PRNG seed random()/randomblob() drew from and the time SQLite's
// 'now' read, so replaying the entries in order on the next owner rebuilds the database
// exactly. The host also keeps a snapshot (the database file, from db.export()) so
// replay reads only the tail after it.
//
// The async KV API, the synchronous ctx.storage.kv API and their values live in the same
// database (table _cf_KV, hidden from the tenant's SQL as on Workers); alarms are ops of
// the same commit on the host.
//
// Runs at snapshot time: nothing here calls a host callback (or runs) until used.
import { host } from './host.js';
import { loadLib } from './web/lib.js';
import { ArrayPush, ReflectApply } from './web/primordials.js';

const ErrorCtor = Error;
const TypeErrorCtor = TypeError;
const RangeErrorCtor = RangeError;
const StringCtor = String;
const NumberCtor = Number;
const U8 = Uint8Array;
const ArrayBufferCtor = ArrayBuffer;
const isView = ArrayBuffer.isView;
const isArray = Array.isArray;
const freeze = Object.freeze;
const defineProperty = Object.defineProperty;
const getOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
const dateNow = Date.now;
const mathRandom = Math.random;
const floor = Math.floor;
const fnToString = Function.prototype.toString;
const SymbolIterator = Symbol.iterator;
const encoder = { length: (s) => { let n = 0; for (let i = 0; i < s.length; i++) { const c = s.charCodeAt(i); n += c < 0x80 ? 1 : c < 0x800 ? 2 : (c >= 0xd800 && c < 0xdc00) ? 2 : 3; } return n; } };

/** Cloudflare's documented limits for SQLite-backed Durable Objects. */
export const MAX_STATEMENT_BYTES = 100_000;
export const MAX_BINDINGS = 100;
export const MAX_VALUE_BYTES = 2 * 1024 * 1024;
export const MAX_KEY_BYTES = 2048;

const TRANSACTION_REFUSED = 'To execute a transaction, please use the state.storage.transaction() or state.storage.transactionSync() APIs instead of the SQL BEGIN TRANSACTION or SAVEPOINT statements. The JavaScript API is safer because it will automatically roll back on exceptions, and because it interacts correctly with Durable Objects\' automatic atomic write coalescing.';

/** PRAGMAs a tenant may run (workerd's allow-list, less what a wasm build cannot do). */
const PRAGMAS = new Set([
  'data_version', 'table_list', 'table_info', 'table_xinfo', 'index_info', 'index_list', 'index_xinfo',
  'foreign_key_list', 'foreign_key_check', 'foreign_keys', 'defer_foreign_keys', 'legacy_alter_table',
  'case_sensitive_like', 'reverse_unordered_selects', 'recursive_triggers', 'quick_check', 'optimize',
]);

// ---- a small SQL tokenizer: enough to classify a statement and find names ---------------

/**
 * The statement's words: { w: upper-cased bare word or punctuation, id: identifier text
 * (bare or quoted, for the _cf_ check), depth: parenthesis depth }. Strings, blobs and
 * comments are skipped.
 */
function tokens(sql) {
  const out = [];
  let depth = 0;
  const n = sql.length;
  let i = 0;
  while (i < n) {
    const c = sql[i];
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f') { i++; continue; }
    if (c === '-' && sql[i + 1] === '-') { while (i < n && sql[i] !== '\n') i++; continue; }
    if (c === '/' && sql[i + 1] === '*') { const e = sql.indexOf('*/', i + 2); i = e < 0 ? n : e + 2; continue; }
    if (c === '\'') { i++; while (i < n) { if (sql[i] === '\'') { if (sql[i + 1] === '\'') { i += 2; continue; } break; } i++; } i++; continue; }
    if (c === '"' || c === '`' || c === '[') {
      const close = c === '[' ? ']' : c;
      let j = i + 1;
      let text = '';
      while (j < n) {
        if (sql[j] === close) { if (close !== ']' && sql[j + 1] === close) { text += close; j += 2; continue; } break; }
        text += sql[j++];
      }
      ArrayPush(out, { w: '', id: text, depth });
      i = j + 1;
      continue;
    }
    if (c === '(') { depth++; ArrayPush(out, { w: '(', id: '', depth }); i++; continue; }
    if (c === ')') { depth--; ArrayPush(out, { w: ')', id: '', depth }); i++; continue; }
    if (/[A-Za-z_\u0080-\uffff]/.test(c)) {
      let j = i + 1;
      while (j < n && /[A-Za-z0-9_$\u0080-\uffff]/.test(sql[j])) j++;
      const word = sql.slice(i, j);
      ArrayPush(out, { w: word.toUpperCase(), id: word, depth });
      i = j;
      continue;
    }
    ArrayPush(out, { w: c, id: '', depth });
    i++;
  }
  return out;
}

const READ_VERBS = new Set(['SELECT', 'VALUES']);
const WRITE_VERBS = new Set(['INSERT', 'UPDATE', 'DELETE', 'REPLACE']);

function authError(message) {
  const err = new ErrorCtor(`${message}: SQLITE_AUTH`);
  return err;
}

/**
 * Refuses what Workers refuses; says whether the statement may write (then it is logged).
 * A statement classed as writing that did not is only replayed in vain.
 */
function classify(sql) {
  const t = tokens(sql);
  for (let i = 0; i < t.length; i++) {
    const id = t[i].id;
    if (id.length >= 4 && id.slice(0, 4).toLowerCase() === '_cf_') throw authError(`access to ${id} is prohibited`);
  }
  if (t.length === 0) return { write: false };
  const first = t[0].w;
  if (first === 'BEGIN' || first === 'COMMIT' || first === 'END' || first === 'ROLLBACK' || first === 'SAVEPOINT' || first === 'RELEASE') {
    throw new ErrorCtor(TRANSACTION_REFUSED);
  }
  if (first === 'ATTACH' || first === 'DETACH') throw authError('not authorized');
  if (first === 'VACUUM') throw authError('not authorized');
  if (first === 'PRAGMA') {
    let k = 1;
    // PRAGMA schema.name
    if (t[k + 1] && t[k + 1].w === '.') k += 2;
    const name = t[k] ? (t[k].w || t[k].id).toLowerCase() : '';
    if (!PRAGMAS.has(name)) throw authError('not authorized');
    for (let i = k + 1; i < t.length; i++) if (t[i].w === '=') return { write: true };
    return { write: false };
  }
  if (READ_VERBS.has(first) || first === 'EXPLAIN') return { write: false };
  if (first === 'WITH') {
    for (let i = 1; i < t.length; i++) {
      if (t[i].depth !== 0) continue;
      if (READ_VERBS.has(t[i].w)) return { write: false };
      if (WRITE_VERBS.has(t[i].w)) return { write: true };
    }
  }
  return { write: true };
}

/**
 * How many parameters a statement takes, by SQLite's numbering: `?` is the next number,
 * `?NNN` that number, `:name`, `@name` and `$name` one number per distinct name.
 */
function parameterCount(sql) {
  let max = 0;
  const names = new Map();
  const n = sql.length;
  let i = 0;
  while (i < n) {
    const c = sql[i];
    if (c === '-' && sql[i + 1] === '-') { while (i < n && sql[i] !== '\n') i++; continue; }
    if (c === '/' && sql[i + 1] === '*') { const e = sql.indexOf('*/', i + 2); i = e < 0 ? n : e + 2; continue; }
    if (c === '\'' || c === '"' || c === '`' || c === '[') {
      const close = c === '[' ? ']' : c;
      i++;
      while (i < n && sql[i] !== close) i++;
      i++;
      continue;
    }
    if (c === '?') {
      let j = i + 1;
      while (j < n && sql[j] >= '0' && sql[j] <= '9') j++;
      max = j > i + 1 ? Math.max(max, NumberCtor(sql.slice(i + 1, j))) : max + 1;
      i = j;
      continue;
    }
    if ((c === ':' || c === '@' || c === '$') && i + 1 < n && /[A-Za-z0-9_]/.test(sql[i + 1])) {
      let j = i + 1;
      while (j < n && /[A-Za-z0-9_$]/.test(sql[j])) j++;
      const name = sql.slice(i, j);
      if (!names.has(name)) names.set(name, ++max);
      i = j;
      continue;
    }
    i++;
  }
  return max;
}

/** True when what is left of a multi-statement query holds no statement. */
function blank(rest) {
  const t = tokens(StringCtor(rest || ''));
  for (let i = 0; i < t.length; i++) if (t[i].w !== ';') return false;
  return true;
}

// ---- deterministic random() and 'now' ----------------------------------------------------

let prng = 0;
/** mulberry32: a small PRNG whose whole state is the seed an entry carries. */
function nextRandom() {
  prng = (prng + 0x6d2b79f5) | 0;
  let t = prng;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0);
}
const freshSeed = () => floor(ReflectApply(mathRandom, Math, []) * 0x1_0000_0000) | 0;
/** The time SQLite's 'now' reads while a statement runs (null: the clock). */
let pinnedNow = null;
const clock = () => (pinnedNow !== null ? pinnedNow : ReflectApply(dateNow, Date, []));

// ---- values --------------------------------------------------------------------------------

function bindValue(v, i) {
  if (v === null || v === undefined) return null;
  const t = typeof v;
  if (t === 'number' || t === 'bigint') return v;
  if (t === 'boolean') return v ? 1 : 0;
  if (t === 'string') {
    if (v.length > MAX_VALUE_BYTES || encoder.length(v) > MAX_VALUE_BYTES) throw new RangeErrorCtor(`string or blob too big: SQLITE_TOOBIG (binding ${i + 1} is over ${MAX_VALUE_BYTES} bytes)`);
    return v;
  }
  let bytes = null;
  if (v instanceof ArrayBufferCtor) bytes = new U8(v.slice(0));
  else if (isView(v)) bytes = new U8(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength));
  if (bytes !== null) {
    if (bytes.length > MAX_VALUE_BYTES) throw new RangeErrorCtor(`string or blob too big: SQLITE_TOOBIG (binding ${i + 1} is over ${MAX_VALUE_BYTES} bytes)`);
    return bytes;
  }
  throw new TypeErrorCtor(`Wrong type for binding ${i + 1}: expected a string, number, bigint, boolean, null, ArrayBuffer or typed array, not ${t === 'object' ? 'an object' : t}`);
}

/** Blobs come back as ArrayBuffers, as on Workers. */
function outValue(v) {
  if (v instanceof U8) return v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength);
  return v;
}

function sqlError(err) {
  if (err !== null && typeof err === 'object' && typeof err.code === 'string' && typeof err.message === 'string') {
    // workerd names the primary result code (SQLITE_CONSTRAINT, not SQLITE_CONSTRAINT_CHECK).
    const code = /^SQLITE_[A-Z]+/.exec(err.code);
    return new ErrorCtor(`${err.message}: ${code === null ? err.code : code[0]}`);
  }
  if (typeof err === 'string') return new ErrorCtor(err);
  return err;
}

// ---- the database ----------------------------------------------------------------------------

/** Opened once per activation by openSql(); null in a KV-backed actor. */
let SQL = null;
let db = null;
let maxBytes = 0;
/** The largest statement (SQL and bindings) one durable commit can carry. */
let maxEntryBytes = MAX_VALUE_BYTES;
let txnDepth = 0;

/** Runs one prepared statement to the end; returns { columns, rows, changes }. */
function runStatement(stmt, params, write, entry) {
  if (params !== null) stmt.bind(params);
  const columns = stmt.getColumnNames();
  const rows = [];
  if (write) {
    pinnedNow = entry.time;
    prng = entry.seed;
  }
  const t0 = ReflectApply(dateNow, Date, []);
  try {
    while (stmt.step()) ArrayPush(rows, stmt.get());
  } finally {
    pinnedNow = null;
  }
  // What replaying it will cost, about: the host takes a snapshot before replay would outgrow the open's budget.
  if (write) entry.ms = ReflectApply(dateNow, Date, []) - t0;
  return { columns, rows, changes: write ? db.getRowsModified() : 0 };
}

/**
 * Runs a query (one or more statements). `trusted` skips the tenant checks (the
 * platform's own statements). Written statements are logged to the host as they succeed.
 * Bindings go to the last statement (the ones before it must have none).
 */
function run(query, params, trusted) {
  if (db === null) throw new ErrorCtor('the SQLite database of this actor is not open');
  const it = db.iterateStatements(query);
  let last = { columns: [], rows: [], changes: 0 };
  let written = 0;
  let read = 0;
  try {
    for (;;) {
      let next;
      try {
        next = it.next();
      } catch (err) {
        throw sqlError(err);
      }
      if (next.done) break;
      const stmt = next.value;
      const text = stmt.getSQL();
      const kind = trusted ? { write: !trusted.read } : classify(text);
      const isLast = blank(it.getRemainingSQL());
      if (!trusted) {
        // workerd's rules and wording: bindings belong to the last statement, all of them.
        const wanted = parameterCount(text);
        if (!isLast && wanted > 0) throw new ErrorCtor('When executing multiple SQL statements in a single call, only the last statement can have parameters.');
        if (isLast && wanted !== params.length) throw new ErrorCtor('Wrong number of parameter bindings for SQL query.');
      }
      const bound = isLast && params.length > 0 ? params : null;
      const entry = kind.write ? { sql: text, params: bound === null ? [] : bound, seed: freshSeed(), time: ReflectApply(dateNow, Date, []) } : null;
      if (entry !== null) checkEntrySize(entry);
      let result;
      try {
        result = runStatement(stmt, bound, kind.write, entry);
      } catch (err) {
        throw sqlError(err);
      }
      if (entry !== null) logEntry(entry);
      written += result.changes;
      read += result.rows.length;
      last = result;
    }
  } finally {
    try { it.return(); } catch { /* already finished */ }
  }
  return { columns: last.columns, rows: last.rows, rowsRead: read, rowsWritten: written };
}

/** Refused before it runs: a statement whose log entry could not be committed. */
function checkEntrySize(entry) {
  let n = encoder.length(entry.sql);
  const p = entry.params;
  for (let i = 0; i < p.length; i++) {
    const v = p[i];
    n += typeof v === 'string' ? encoder.length(v) : v instanceof U8 ? v.length : 8;
  }
  if (n > maxEntryBytes) {
    throw new RangeErrorCtor(`string or blob too big: SQLITE_TOOBIG (the statement and its bindings take ${n} bytes; one durable write holds at most ${maxEntryBytes})`);
  }
}

function logEntry(entry) {
  host.storage('sqlLog', entry);
}

/** Replays one logged entry exactly as it ran (see runStatement). */
function replay(entry) {
  const stmt = db.prepare(entry.sql);
  try {
    runStatement(stmt, entry.params.length > 0 ? entry.params : null, true, entry);
  } finally {
    stmt.free();
  }
}

function pageCount() {
  const r = db.exec('PRAGMA page_count; PRAGMA page_size');
  return { pages: r[0].values[0][0], size: r[1].values[0][0] };
}

function internal(query, params = []) {
  return run(query, params, { read: false });
}

function internalRead(query, params = []) {
  return run(query, params, { read: true });
}

/**
 * Opens the actor's database (an activation's construct event awaits it): instantiates
 * the module from the bytes the host hands over, restores the snapshot and replays the
 * log after it.
 */
/** sql.js's initSqlJs, once loaded. */
let sqlJs = null;

export async function openSql() {
  const init = host.storage('sqlInit');
  maxBytes = NumberCtor(init.maxBytes);
  maxEntryBytes = NumberCtor(init.maxEntryBytes) > 0 ? NumberCtor(init.maxEntryBytes) : MAX_VALUE_BYTES;
  const wasm = init.wasm;
  // sql.js decides it runs under Node when `process.versions.node` is there, as it is with
  // nodejs_compat (or anything a worker defines), and then require()s node:fs. It decides
  // synchronously as initSqlJs is called: the global is out of its sight only for that call.
  // Out of the snapshot (web/lib.js): sql.js's glue is evaluated at the first open.
  const initSqlJs = sqlJs ??= loadLib('sql-wasm');
  const g = globalThis;
  const processDesc = getOwnPropertyDescriptor(g, 'process');
  if (processDesc !== undefined) Reflect.deleteProperty(g, 'process');
  let pending;
  try {
    pending = initSqlJs({
      useOldExtensionFunctions: false,
      print: () => {},
      printErr: () => {},
      instantiateWasm(imports, done) {
        // SQLite reads 'now' from the module's date import: pin it while a logged
        // statement runs, so replay reads the time the statement first read.
        const env = imports.a;
        for (const k of Object.keys(env)) {
          const f = env[k];
          if (typeof f === 'function' && ReflectApply(fnToString, f, []) === '()=>Date.now()') env[k] = clock;
        }
        const WA = globalThis.WebAssembly;
        const module = new WA.Module(wasm);
        const instance = new WA.Instance(module, imports);
        done(instance, module);
        return {};
      },
    });
  } finally {
    if (processDesc !== undefined) defineProperty(g, 'process', processDesc);
  }
  SQL = await pending;
  db = init.db === null ? new SQL.Database() : new SQL.Database(new U8(init.db));
  db.create_function('random', () => {
    const hi = nextRandom() | 0;
    const lo = nextRandom();
    return hi * 0x1_0000_0000 + lo;
  });
  db.create_function('randomblob', (n) => {
    const len = NumberCtor(n) > 1 ? floor(NumberCtor(n)) : 1;
    if (len > MAX_VALUE_BYTES) throw new RangeErrorCtor('string or blob too big');
    const out = new U8(len);
    for (let i = 0; i < len; i++) out[i] = nextRandom() & 0xff;
    return out;
  });
  const { size } = pageCount();
  db.exec(`PRAGMA max_page_count = ${floor(maxBytes / size)}; PRAGMA foreign_keys = ON;`);
  db.exec('CREATE TABLE IF NOT EXISTS _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID');
  const log = init.log;
  for (let i = 0; i < log.length; i++) replay(log[i]);
}

/** The database file (db.export()), for the host's snapshot; its log after it is empty. */
export function exportSql() {
  if (db === null) return;
  host.storage('sqlCheckpoint', db.export());
  // export() leaves the connection as it was, but re-assert what a fresh open sets.
  db.exec('PRAGMA foreign_keys = ON');
}

// ---- the cursor ------------------------------------------------------------------------------

class SqlStorageCursor {
  #columns = [];
  #rows;
  #next = 0;
  #read;
  #written;
  constructor(result) {
    if (result === null || typeof result !== 'object' || !isArray(result.rows)) throw new TypeErrorCtor('Illegal constructor: cursors are made by sql.exec()');
    this.#columns = result.columns;
    this.#rows = result.rows;
    this.#read = result.rowsRead;
    this.#written = result.rowsWritten;
  }

  get columnNames() { return this.#columns.slice(); }
  get rowsRead() { return this.#read; }
  get rowsWritten() { return this.#written; }

  #take() {
    if (this.#next >= this.#rows.length) return null;
    const raw = this.#rows[this.#next];
    this.#rows[this.#next++] = undefined;
    const out = [];
    for (let i = 0; i < raw.length; i++) ArrayPush(out, outValue(raw[i]));
    return out;
  }

  #object(raw) {
    const o = {};
    for (let i = 0; i < this.#columns.length; i++) o[this.#columns[i]] = raw[i];
    return o;
  }

  next() {
    const raw = this.#take();
    if (raw === null) return { done: true, value: undefined };
    return { done: false, value: this.#object(raw) };
  }

  toArray() {
    const out = [];
    for (let raw = this.#take(); raw !== null; raw = this.#take()) ArrayPush(out, this.#object(raw));
    return out;
  }

  one() {
    const first = this.#take();
    if (first === null) throw new ErrorCtor('Expected exactly one result from SQL query, but got no results.');
    if (this.#take() !== null) throw new ErrorCtor('Expected exactly one result from SQL query, but got multiple results.');
    return this.#object(first);
  }

  raw() {
    const take = () => this.#take();
    return {
      next() {
        const r = take();
        return r === null ? { done: true, value: undefined } : { done: false, value: r };
      },
      toArray() {
        const out = [];
        for (let r = take(); r !== null; r = take()) ArrayPush(out, r);
        return out;
      },
      columnNames: this.#columns.slice(),
      [SymbolIterator]() { return this; },
    };
  }

  [SymbolIterator]() { return this; }
}

class SqlStorage {
  exec(query, ...bindings) {
    if (typeof query !== 'string') throw new TypeErrorCtor('SqlStorage.exec(): the query must be a string');
    if (query.length > MAX_STATEMENT_BYTES || encoder.length(query) > MAX_STATEMENT_BYTES) {
      throw new RangeErrorCtor(`statement too long: SQLITE_TOOBIG (the query is over ${MAX_STATEMENT_BYTES} bytes)`);
    }
    if (bindings.length > MAX_BINDINGS) throw new RangeErrorCtor(`too many SQL variables: SQLITE_ERROR (${bindings.length} bindings; at most ${MAX_BINDINGS})`);
    const params = [];
    for (let i = 0; i < bindings.length; i++) ArrayPush(params, bindValue(bindings[i], i));
    return new SqlStorageCursor(run(query, params, null));
  }

  get databaseSize() {
    const { pages, size } = pageCount();
    return pages * size;
  }

  /** The cursor class, for `instanceof` (workerd's `sql.Cursor`). */
  get Cursor() { return SqlStorageCursor; }
}
freeze(SqlStorageCursor.prototype);
freeze(SqlStorage.prototype);

// ---- key-value on the same database ---------------------------------------------------------

function checkKey(key, what) {
  const k = typeof key === 'string' ? key : `${key}`;
  if (encoder.length(k) > MAX_KEY_BYTES) throw new RangeErrorCtor(`${what}: keys cannot be larger than ${MAX_KEY_BYTES} bytes`);
  return k;
}

const encodeValue = (value, what) => {
  const bytes = host.storage('encode', value);
  if (bytes.length > MAX_VALUE_BYTES) throw new RangeErrorCtor(`${what}: values cannot be larger than ${MAX_VALUE_BYTES} bytes serialized; this one is ${bytes.length}`);
  return bytes;
};
const decodeValue = (bytes) => host.storage('decode', bytes);

function kvGet(key) {
  const r = internalRead('SELECT value FROM _cf_KV WHERE key = ?', [checkKey(key, 'get()')]);
  return r.rows.length === 0 ? undefined : decodeValue(r.rows[0][0]);
}

function kvGetMany(keys) {
  const out = new Map();
  for (let i = 0; i < keys.length; i++) {
    const v = kvGet(keys[i]);
    if (v !== undefined) out.set(`${keys[i]}`, v);
  }
  return out;
}

function kvPut(key, value) {
  const k = checkKey(key, 'put()');
  internal('INSERT OR REPLACE INTO _cf_KV (key, value) VALUES (?, ?)', [k, encodeValue(value, 'put()')]);
}

function kvDelete(key) {
  return internal('DELETE FROM _cf_KV WHERE key = ?', [checkKey(key, 'delete()')]).rowsWritten > 0;
}

function kvList(options) {
  const o = options === undefined || options === null ? {} : options;
  if (typeof o !== 'object') throw new TypeErrorCtor('list(): options must be an object');
  const where = [];
  const params = [];
  if (o.start !== undefined && o.startAfter !== undefined) throw new TypeErrorCtor('list(): start and startAfter cannot both be given');
  if (o.start !== undefined) { ArrayPush(where, 'key >= ?'); ArrayPush(params, `${o.start}`); }
  if (o.startAfter !== undefined) { ArrayPush(where, 'key > ?'); ArrayPush(params, `${o.startAfter}`); }
  if (o.end !== undefined) { ArrayPush(where, 'key < ?'); ArrayPush(params, `${o.end}`); }
  if (o.prefix !== undefined && `${o.prefix}` !== '') {
    // Keys starting with the prefix: key >= prefix and substr(key, 1, len) = prefix.
    ArrayPush(where, 'key >= ? AND substr(key, 1, length(?)) = ?');
    ArrayPush(params, `${o.prefix}`, `${o.prefix}`, `${o.prefix}`);
  }
  let sql = 'SELECT key, value FROM _cf_KV';
  if (where.length > 0) sql += ` WHERE ${where.join(' AND ')}`;
  sql += o.reverse ? ' ORDER BY key DESC' : ' ORDER BY key';
  if (o.limit !== undefined) {
    if (!(NumberCtor.isInteger(o.limit) && o.limit > 0)) throw new RangeErrorCtor('list(): limit must be a positive integer');
    sql += ` LIMIT ${o.limit}`;
  }
  const r = internalRead(sql, params);
  const out = new Map();
  for (let i = 0; i < r.rows.length; i++) out.set(r.rows[i][0], decodeValue(r.rows[i][1]));
  return out;
}

function kvDeleteAll() {
  const r = internalRead("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' AND type IN ('table', 'view', 'trigger')");
  for (let i = 0; i < r.rows.length; i++) {
    const type = r.rows[i][0];
    const name = StringCtor(r.rows[i][1]).replace(/"/g, '""');
    internal(`DROP ${type === 'table' ? 'TABLE' : type === 'view' ? 'VIEW' : 'TRIGGER'} IF EXISTS "${name}"`);
  }
  internal('DELETE FROM _cf_KV');
}

// ---- transactions ---------------------------------------------------------------------------

/**
 * A savepoint on both sides: SQLite's, and the host's record of this event's writes, so a
 * rollback undoes the statements and drops their log entries (and any alarm set inside).
 * SAVEPOINT and RELEASE are logged too, so replay applies a transaction as one, as
 * deferred foreign keys need.
 */
function begin() {
  const token = host.storage('txnBegin');
  const name = `_cf_txn_${++txnDepth}`;
  try {
    internal(`SAVEPOINT ${name}`);
  } catch (err) {
    txnDepth--;
    host.storage('txnRollback', token);
    throw err;
  }
  return { token, name };
}

function commit(t) {
  internal(`RELEASE ${t.name}`);
  txnDepth--;
  host.storage('txnCommit', t.token);
}

function rollback(t) {
  txnDepth--;
  try {
    db.exec(`ROLLBACK TO ${t.name}; RELEASE ${t.name}`);
  } finally {
    host.storage('txnRollback', t.token);
  }
}

function transactionSync(fn) {
  if (typeof fn !== 'function') throw new TypeErrorCtor('transactionSync(): the argument must be a function');
  const t = begin();
  let value;
  try {
    value = fn();
  } catch (err) {
    rollback(t);
    throw err;
  }
  commit(t);
  return value;
}

/**
 * state.storage of a SQLite-backed actor. `alarms` are the KV-backed storage's alarm
 * methods (the alarm is an op of the same commit on the host).
 */
export function sqlStorage(alarms) {
  const sql = new SqlStorage();
  const kv = freeze({
    get: (key) => kvGet(key),
    put: (key, value) => { kvPut(key, value); },
    delete: (key) => kvDelete(key),
    list: (options = undefined) => {
      const entries = [];
      for (const e of kvList(options)) ArrayPush(entries, e);
      return entries[SymbolIterator]();
    },
  });
  const methods = {
    async get(keys) {
      return isArray(keys) ? kvGetMany(keys) : kvGet(keys);
    },
    async put(keyOrEntries, value = undefined) {
      if (keyOrEntries !== null && typeof keyOrEntries === 'object' && !isArray(keyOrEntries)) {
        transactionSync(() => { for (const k of Object.keys(keyOrEntries)) kvPut(k, keyOrEntries[k]); });
        return;
      }
      kvPut(keyOrEntries, value);
    },
    async delete(keys) {
      if (!isArray(keys)) return kvDelete(keys);
      let n = 0;
      transactionSync(() => { for (let i = 0; i < keys.length; i++) if (kvDelete(keys[i])) n++; });
      return n;
    },
    async list(options = undefined) { return kvList(options); },
    getAlarm: alarms.getAlarm,
    setAlarm: alarms.setAlarm,
    deleteAlarm: alarms.deleteAlarm,
  };
  const storage = {
    ...methods,
    sql,
    kv,
    async deleteAll() { transactionSync(kvDeleteAll); },
    transactionSync,
    async transaction(closure) {
      if (typeof closure !== 'function') throw new TypeErrorCtor('storage.transaction(): the argument must be a function');
      const t = begin();
      let state = 'open';
      const txn = freeze({ ...methods, rollback() { if (state === 'open') { state = 'rolledback'; rollback(t); } } });
      let value;
      try {
        value = await closure(txn);
      } catch (err) {
        if (state === 'open') { state = 'rolledback'; rollback(t); }
        throw err;
      }
      if (state === 'open') { state = 'over'; commit(t); }
      return value;
    },
    async sync() {},
  };
  return freeze(storage);
}

/** ctx.storage.sql of a KV-backed class: throws as workerd does. */
export function noSql(storage) {
  const out = { ...storage };
  defineProperty(out, 'sql', { get() { throw new ErrorCtor('SQL is not enabled for this Durable Object class.'); }, enumerable: true });
  defineProperty(out, 'kv', { get() { throw new ErrorCtor('SQL is not enabled for this Durable Object class.'); }, enumerable: true });
  out.transactionSync = () => { throw new ErrorCtor('SQL is not enabled for this Durable Object class.'); };
  return freeze(out);
}
