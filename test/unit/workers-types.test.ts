import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { bundleWorker } from '../../cli/deploy.js';
import { ActorIds } from '../../node-agent/bindings/actor-id.js';
import type { WorkerEnv } from '../../node-agent/abi/bridge.js';
import { WorkerIsolate } from '../../node-agent/isolate/worker-isolate.js';
import { WORKERS_API, type WorkersApiName } from '../types/workers-api.js';
import { activate, actorPool, FakeActorHost, request, testHooks, text, workerDef } from './shim/run-actor.js';

// The run-time half of the Workers API check (test/types/workers-api.ts): every member of
// each @cloudflare/workers-types type is looked up on the object a worker really gets, in
// a real isolate made from the shim's snapshot, and what is not there must be exactly the
// list's gaps. The type half (test/types/contract.ts, `npm run typecheck`) checks the same
// list against the shim's classes as TypeScript infers them; this half also covers what
// inference cannot see: members a helper defines on a prototype, and the objects the
// runtime builds per request (ctx, env bindings, a Durable Object's state and storage).

const ROOT = join(import.meta.dirname, '..', '..');
const WORKERS_TYPES = join(ROOT, 'node_modules/@cloudflare/workers-types/latest/index.d.ts');
/**
 * The handlers the agent calls, and where a test shows it: what an object has cannot say
 * whether the runtime ever calls it, so these are listed by hand. A new dispatch path
 * adds its handler here and takes it off the list's gaps.
 */
const HANDLERS_CALLED: Partial<Record<WorkersApiName, string[]>> = {
  ExportedHandler: ['fetch'], // every test in test/unit/shim/
  DurableObject: ['fetch', 'alarm', 'webSocketMessage', 'webSocketClose', 'webSocketError'], // test/unit/shim/durable.test.ts, test/agent/hibernation.test.ts
};

/** Whole features that have no workers-types member list of their own. */
const FEATURE_KEYS = new Set<WorkersApiName>(['JS RPC on stubs']);

/** Entries whose workers-types type is not written as their name. */
const TYPE_EXPRESSIONS: Partial<Record<WorkersApiName, string>> = {
  WebSocketPair: 'InstanceType<typeof WebSocketPair>',
  SqlStorageCursor: 'SqlStorageCursor<Record<string, SqlStorageValue>>',
  globalThis: 'typeof globalThis',
  'cloudflare:workers': "typeof import('cloudflare:workers')",
};

/** The workers-types expression each entry of the list is measured against. */
function typeExpression(name: WorkersApiName): string {
  const expression = TYPE_EXPRESSIONS[name];
  if (expression !== undefined) return expression;
  const statics = /^(\w+) \(static\)$/.exec(name);
  return statics ? `typeof ${statics[1]}` : name;
}

const symbolName = (escaped: string) => /^__@(\w+)@\d+$/.exec(escaped)?.[1];

interface Members {
  /** Every member name of each listed type. */
  names: Map<WorkersApiName, string[]>;
  /** Those a worker calls: methods and function-typed properties, classes (constructors). */
  callable: Map<WorkersApiName, string[]>;
}

/** The members of each listed workers-types type, read with the compiler API. */
function workersTypesMembers(): Members {
  const names = (Object.keys(WORKERS_API) as WorkersApiName[]).filter((k) => !FEATURE_KEYS.has(k));
  const probe = join(ROOT, 'test/types/__members__.ts');
  const source = `export declare const api: {\n${names.map((n) => `  ${JSON.stringify(n)}: ${typeExpression(n)};`).join('\n')}\n};\n`;
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ['lib.es2023.d.ts'], types: [], strict: true, noEmit: true, skipLibCheck: true,
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (file, lang, ...rest) => (file === probe ? ts.createSourceFile(file, source, lang) : getSourceFile(file, lang, ...rest));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (file) => file === probe || fileExists(file);
  const program = ts.createProgram([WORKERS_TYPES, probe], options, host);
  const problems = ts.getPreEmitDiagnostics(program, program.getSourceFile(probe));
  if (problems.length > 0) throw new Error(ts.formatDiagnostics(problems, host));
  const checker = program.getTypeChecker();
  const file = program.getSourceFile(probe)!;
  const api = checker.getExportsOfModule(checker.getSymbolAtLocation(file)!).find((s) => s.name === 'api')!;
  const out = new Map<WorkersApiName, string[]>();
  const callable = new Map<WorkersApiName, string[]>();
  const nameOf = (m: ts.Symbol) => {
    const sym = symbolName(m.escapedName as string);
    return sym === undefined ? m.name : `[Symbol.${sym}]`;
  };
  // An optional member (`alarm?()`) or a union (`onmessage: (...) | null`) has no signatures
  // of its own: only what is always callable counts.
  const isCallable = (m: ts.Symbol) => {
    const t = checker.getTypeOfSymbol(m);
    return t.getCallSignatures().length > 0 || t.getConstructSignatures().length > 0;
  };
  for (const prop of checker.getPropertiesOfType(checker.getTypeOfSymbol(api))) {
    const members = checker.getPropertiesOfType(checker.getTypeOfSymbol(prop))
      .filter((m) => (m.flags & ts.SymbolFlags.ValueModule) === 0 && m.name !== 'prototype');
    out.set(prop.name as WorkersApiName, members.map(nameOf));
    callable.set(prop.name as WorkersApiName, members.filter(isCallable).map(nameOf));
  }
  // `typeof globalThis` holds only var and function declarations: the global classes and
  // consts are the value symbols workers-types declares at top level. Left out: namespaces
  // (Rpc, CloudflareWorkersModule, ...), there only to name types, and abstract classes,
  // which is how workers-types writes the types of bindings (Ai, D1Database, R2Bucket,
  // DurableObjectNamespace) that no worker finds as a global.
  const wt = program.getSourceFile(WORKERS_TYPES)!;
  const isAbstract = (d: ts.Declaration) => ts.isClassDeclaration(d) && (ts.getCombinedModifierFlags(d) & ts.ModifierFlags.Abstract) !== 0;
  const globals = checker.getSymbolsInScope(wt, ts.SymbolFlags.Value)
    .filter((s) => s.declarations?.some((d) => d.getSourceFile() === wt) && !s.declarations.some(isAbstract))
    .filter((s) => (s.flags & (ts.SymbolFlags.Variable | ts.SymbolFlags.Function | ts.SymbolFlags.Class)) !== 0);
  out.set('globalThis', [...new Set([...(out.get('globalThis') ?? []), ...globals.map((s) => s.name)])]);
  callable.set('globalThis', [...new Set([...(callable.get('globalThis') ?? []), ...globals.filter(isCallable).map((s) => s.name)])]);
  return { names: out, callable };
}

/** What the isolate found of one object: the members it has and which of them are functions; null when the object is not there. */
type Found = { has: string[]; functions: string[] } | null;

/**
 * The probe run in the isolate: `reach` (expressions over request, env, ctx, state) give
 * the objects; for each, what it has of the members named.
 */
const PRESENT = `
const key = (m) => {
  const sym = /^\\[Symbol\\.(\\w+)\\]$/.exec(m);
  return sym ? Symbol[sym[1]] : m;
};
const isFunction = (o, k) => { try { return typeof o[k] === 'function'; } catch { return false; } };
/** One of each token an HTMLRewriter handler is handed, kept past its handler (measured by name only). */
const htmlTokens = async () => {
  const t = {};
  await new HTMLRewriter()
    .on('p', { element(el) { t.element = el; el.onEndTag((end) => { t.endTag = end; }); }, text(x) { t.text ??= x; }, comments(c) { t.comment = c; } })
    .onDocument({ doctype(d) { t.doctype = d; }, end(e) { t.end = e; } })
    .transform(new Response('<!DOCTYPE html><p>x<!--c--></p>')).text();
  return t;
};
const present = async (members, reach) => {
  const out = {};
  for (const [name, get] of Object.entries(reach)) {
    let obj;
    try { obj = await get(); } catch { obj = undefined; }
    if (obj === undefined || obj === null) { out[name] = null; continue; }
    const o = Object(obj);
    const has = members[name].filter((m) => key(m) in o);
    out[name] = { has, functions: has.filter((m) => isFunction(o, key(m))) };
  }
  return out;
};`;

/** What a worker's fetch handler sees: the globals, ctx and an ai binding. */
const WORKER_REACH = `{
  Request: () => new Request('https://example.com/'),
  Response: () => new Response('x'),
  'Response (static)': () => Response,
  Headers: () => new Headers(),
  URL: () => new URL('https://example.com/'),
  'URL (static)': () => URL,
  URLSearchParams: () => new URLSearchParams('a=1'),
  FormData: () => new FormData(),
  Blob: () => new Blob(['x']),
  File: () => new File(['x'], 'x.txt'),
  ReadableStream: () => new ReadableStream(),
  'ReadableStream (static)': () => ReadableStream,
  ReadableStreamDefaultReader: () => new ReadableStream().getReader(),
  WritableStream: () => new WritableStream(),
  WritableStreamDefaultWriter: () => new WritableStream().getWriter(),
  TransformStream: () => new TransformStream(),
  TextEncoder: () => new TextEncoder(),
  TextDecoder: () => new TextDecoder(),
  Event: () => new Event('x'),
  EventTarget: () => new EventTarget(),
  AbortController: () => new AbortController(),
  AbortSignal: () => new AbortController().signal,
  'AbortSignal (static)': () => AbortSignal,
  Crypto: () => crypto,
  SubtleCrypto: () => crypto.subtle,
  CryptoKey: () => crypto.subtle.generateKey({ name: 'HMAC', hash: 'SHA-256' }, false, ['sign']),
  DigestStream: () => new crypto.DigestStream('SHA-256'),
  WebSocket: () => new WebSocketPair()[0],
  WebSocketPair: () => new WebSocketPair(),
  MessageEvent: () => new MessageEvent('message', { data: 'x' }),
  CloseEvent: () => new CloseEvent('close'),
  HTMLRewriter: () => new HTMLRewriter(),
  Element: async () => (await htmlTokens()).element,
  EndTag: async () => (await htmlTokens()).endTag,
  Comment: async () => (await htmlTokens()).comment,
  Text: async () => (await htmlTokens()).text,
  Doctype: async () => (await htmlTokens()).doctype,
  DocumentEnd: async () => (await htmlTokens()).end,
  ExecutionContext: () => ctx,
  Ai: () => env.AI,
  Fetcher: () => env.SERVICE,
  WorkerLoader: () => env.LOADER,
  WorkerStub: () => env.LOADER.load({ compatibilityDate: '2025-06-01', mainModule: 'a.js', modules: { 'a.js': 'export default {}' } }),
  DurableObjectNamespace: () => env.NS,
  DurableObjectId: () => env.NS.idFromName('a'),
  DurableObjectStub: () => env.NS.get(env.NS.idFromName('a')),
  globalThis: () => globalThis,
}`;

/** What a Durable Object's class sees: its state and storage. */
const ACTOR_REACH = `{
  DurableObjectState: () => state,
  DurableObjectStorage: () => state.storage,
  DurableObjectTransaction: () => state.storage.transaction(async (txn) => { t = txn; }).then(() => t),
  SqlStorage: () => state.storage.sql,
  SqlStorageCursor: () => state.storage.sql.exec('SELECT 1 AS one'),
  SyncKvStorage: () => state.storage.kv,
}`;

const UID = 'f00dfeed-0000-4000-8000-000000types';
const live: { dispose(reason: 'shutdown'): void }[] = [];
const actors = new FakeActorHost();
afterAll(() => { for (const x of live) x.dispose('shutdown'); actors.close(); });

const DEFAULT_ENV: WorkerEnv = {
  text: {}, ai: { AI: { model: 'llama-3.1-8b', url: 'http://127.0.0.1:9' } }, actors: { NS: { namespace: 'default', actor: 'things', uid: UID } },
  services: { SERVICE: { namespace: 'default', worker: 'other' } }, loaders: ['LOADER'],
};

async function loadWorker(source: string, env: WorkerEnv = DEFAULT_ENV): Promise<WorkerIsolate> {
  const def = workerDef(source, { name: 'types', env });
  const p = await actorPool();
  const w = await WorkerIsolate.load(def, p.take(def.limits.memoryMiB), testHooks(actors));
  live.push(w);
  return w;
}

/** One request, its whole (or streamed) body read, its waitUntil work settled. */
async function send(w: WorkerIsolate, url: string, init: { method?: string; headers?: [string, string][] } = {}): Promise<{ status: number; text: string }> {
  const { id, response } = w.begin({ url, method: init.method ?? 'GET', headers: init.headers ?? [], body: null });
  try {
    const res = await response;
    const chunks: Uint8Array[] = [];
    if (res.body === 'stream') for (let c = await w.pullBody(id); c !== null; c = await w.pullBody(id)) chunks.push(c);
    else if (res.body !== null) chunks.push(new Uint8Array(res.body));
    return { status: res.status, text: new TextDecoder().decode(Buffer.concat(chunks)) };
  } finally {
    await w.finish(id);
  }
}

async function runWorker(source: string): Promise<string> {
  return (await send(await loadWorker(source), 'http://w/')).text;
}

/** What each listed object has, measured in real isolates. */
async function measure(names: Map<WorkersApiName, string[]>): Promise<Record<string, Found>> {
  const m = JSON.stringify(Object.fromEntries(names));
  const worker = await runWorker(`${PRESENT}
export default { async fetch(request, env, ctx) {
  const found = await present(${m}, ${WORKER_REACH});
  const stub = env.NS.get(env.NS.idFromName('a'));
  found['JS RPC on stubs'] = typeof stub.anyMethodName === 'function' ? { has: [], functions: [] } : null;
  return Response.json(found);
} };`);
  const a = await activate({ worker: workerDef(`${PRESENT}
export class T {
  constructor(state) { this.state = state; }
  async fetch() { const state = this.state; let t; return Response.json(await present(${m}, ${ACTOR_REACH})); }
}
export default { fetch() { return new Response('not an actor'); } };`), className: 'T', actor: 'default/things', sqlite: true }, new ActorIds(UID).idFromName('a').hex);
  live.push(a);
  const actor = JSON.parse(text(await a.fetch(request('http://actor/')))) as Record<string, Found>;
  const handlers = Object.fromEntries(Object.entries(HANDLERS_CALLED).map(([k, v]) => [k, { has: v, functions: v }]));
  return { ...handlers, ...(JSON.parse(worker) as Record<string, Found>), ...actor, 'cloudflare:workers': await cloudflareWorkers(names.get('cloudflare:workers') ?? []) };
}

/** What a worker bundled as `edge deploy` bundles gets from `cloudflare:workers`; null when the module does not resolve. */
async function cloudflareWorkers(names: string[]): Promise<Found> {
  const dir = mkdtempSync(join(tmpdir(), 'workers-types-'));
  try {
    const file = join(dir, 'worker.js');
    writeFileSync(file, `${PRESENT}
import * as cw from 'cloudflare:workers';
export default { async fetch() { return Response.json(await present({ cw: ${JSON.stringify(names)} }, { cw: () => cw })); } };`);
    const bundle = await bundleWorker(file);
    if ('errors' in bundle) {
      expect(bundle.errors).toMatch(/Could not resolve "cloudflare:workers"/);
      return null;
    }
    return (JSON.parse(await runWorker(bundle.code)) as { cw: Found }).cw;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Wrong {
  missing_but_not_listed?: string[];
  listed_but_present?: string[];
  /** workers-types has a method (or class) there; the shim's member is not a function. */
  not_a_function?: string[];
  /** workers-types has a value there; the shim's member is a function. */
  a_function?: string[];
}

describe('the shim against @cloudflare/workers-types', () => {
  it('every object a worker gets has every member of its workers-types type but exactly the listed gaps, methods as methods', async () => {
    const members = workersTypesMembers();
    const found = await measure(members.names);
    const wrong: Record<string, Wrong> = {};
    for (const [name, listed] of Object.entries(WORKERS_API) as [WorkersApiName, readonly string[]][]) {
      const f = found[name] ?? null;
      const all = members.names.get(name) ?? [];
      const missing = f === null ? ['*'] : all.filter((m) => !f.has.includes(m));
      const w: Wrong = {
        missing_but_not_listed: missing.filter((m) => !listed.includes(m)),
        listed_but_present: listed.filter((m) => !missing.includes(m)),
      };
      if (f !== null && !FEATURE_KEYS.has(name)) {
        const callable = members.callable.get(name) ?? [];
        w.not_a_function = f.has.filter((m) => callable.includes(m) && !f.functions.includes(m));
        w.a_function = f.functions.filter((m) => !callable.includes(m) && !(HANDLERS_CALLED[name] ?? []).includes(m));
      }
      for (const k of Object.keys(w) as (keyof Wrong)[]) if (w[k]?.length === 0) delete w[k];
      if (Object.keys(w).length > 0) wrong[name] = w;
    }
    // Edit test/types/workers-api.ts to match, then npm run gen:api-table (the README's table).
    expect(wrong).toEqual({});
  }, 120_000);

  it('the probe sees a missing member, a symbol-keyed one, a missing object, and which members are functions', async () => {
    const members = { Headers: ['get', 'getSetCookie', 'nonesuch', '[Symbol.iterator]', '[Symbol.asyncIterator]'], Nothing: ['x'], Request: ['url', 'clone'] };
    const out = await runWorker(`${PRESENT}
export default { async fetch() {
  return Response.json(await present(${JSON.stringify(members)}, { Headers: () => new Headers(), Nothing: () => globalThis.nonesuch, Request: () => new Request('https://x/') }));
} };`);
    expect(JSON.parse(out)).toEqual({
      Headers: { has: ['get', 'getSetCookie', '[Symbol.iterator]'], functions: ['get', 'getSetCookie', '[Symbol.iterator]'] },
      Nothing: null,
      Request: { has: ['url', 'clone'], functions: ['clone'] },
    });
  });
});

/** The inline worker sources of examples/*.yaml (EdgeWorker documents). */
function exampleSources(): { file: string; source: string }[] {
  const out: { file: string; source: string }[] = [];
  for (const name of readdirSync(join(ROOT, 'examples')).filter((f) => f.endsWith('.yaml')).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(ROOT, 'examples', name), 'utf8'))) {
      const o = doc.toJS() as { kind?: string; spec?: { source?: { inline?: string } } } | null;
      if (o?.kind === 'EdgeWorker' && o.spec?.source?.inline) out.push({ file: name.replace(/\.yaml$/, '.js'), source: o.spec.source.inline });
    }
  }
  return out;
}

describe('examples/ against @cloudflare/workers-types', () => {
  it('each example worker type-checks as JavaScript with workers-types as its globals, its default export an ExportedHandler', () => {
    const examples = exampleSources();
    expect(examples.map((e) => e.file)).toEqual(expect.arrayContaining(['counter.js', 'hello.js']));
    const dir = join(ROOT, 'examples', '__typecheck__');
    const files = new Map<string, string>();
    for (const e of examples) {
      files.set(join(dir, e.file), e.source);
      // The default export must fit where Workers calls it.
      files.set(join(dir, `${e.file}.check.ts`), `import worker from './${e.file}';\nexport const handler: ExportedHandler<Record<string, unknown>> = worker;\n`);
    }
    const options: ts.CompilerOptions = {
      target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler,
      lib: ['lib.es2023.d.ts'], types: [], typeRoots: [], allowJs: true, checkJs: true, strict: false, noEmit: true, skipLibCheck: true,
    };
    const host = ts.createCompilerHost(options);
    const getSourceFile = host.getSourceFile.bind(host);
    host.getSourceFile = (file, lang, ...rest) => {
      const text = files.get(file);
      return text === undefined ? getSourceFile(file, lang, ...rest) : ts.createSourceFile(file, text, lang);
    };
    const fileExists = host.fileExists.bind(host);
    host.fileExists = (file) => files.has(file) || fileExists(file);
    const directoryExists = host.directoryExists?.bind(host);
    host.directoryExists = (d) => d === dir || (directoryExists?.(d) ?? false);
    const readFile = host.readFile.bind(host);
    host.readFile = (file) => files.get(file) ?? readFile(file);
    const program = ts.createProgram([WORKERS_TYPES, ...files.keys()], options, host);
    // TS2349: a call through an array of mixed [method, path, handler] tuples, which
    // JavaScript inference types as a union; the example's own code, not a Workers API.
    const OWN_CODE = new Set([2349]);
    const problems = ts.getPreEmitDiagnostics(program).filter((d) => d.file && files.has(d.file.fileName) && !OWN_CODE.has(d.code));
    expect(ts.formatDiagnostics(problems, host)).toBe('');
  });
});

describe('workers written against @cloudflare/workers-types (test/types/workers/)', () => {
  it('counter.ts, bundled as edge deploy does, runs unchanged: handler, Durable Object, transaction, list, alarm, streams, crypto', async () => {
    const bundle = await bundleWorker(join(ROOT, 'test/types/workers/counter.ts'));
    if ('errors' in bundle) throw new Error(bundle.errors);
    const target = { namespace: 'default', actor: 'counters', uid: 'f00dfeed-0000-4000-8000-0000counter' };
    const env: WorkerEnv = { text: { GREETING: 'hi' }, actors: { COUNTERS: target } };
    actors.serve(target, { worker: workerDef(bundle.code, { name: 'counter', env }), className: 'Counter', actor: 'default/counters' });
    const w = await loadWorker(bundle.code, env);
    const first = await send(w, 'http://counter.test/apples', { headers: [['x-note', 'one']] });
    expect(first.status).toBe(200);
    expect(JSON.parse(first.text)).toMatchObject({ name: 'apples', value: 1, notes: 1, greeting: 'hi', sameId: true, form: '1' });
    expect(JSON.parse((await send(w, 'http://counter.test/apples')).text)).toMatchObject({ value: 2, notes: 2 });
    expect(JSON.parse((await send(w, 'http://counter.test/apples', { method: 'DELETE' })).text)).toMatchObject({ value: 0 });
    expect(await send(w, 'http://counter.test/stream')).toEqual({ status: 200, text: '36 32' });
  });

  it.each(['rpc-room.ts', 'chat.ts'])('%s (on cloudflare:workers) bundles exactly when the list says cloudflare:workers is there', async (file) => {
    const bundle = await bundleWorker(join(ROOT, 'test/types/workers', file));
    const listed = WORKERS_API['cloudflare:workers'] as readonly string[];
    if (listed.includes('*')) {
      expect('errors' in bundle && bundle.errors).toMatch(/Could not resolve "cloudflare:workers"/);
    } else {
      // Once it lands: the lead turns this into a run of the worker (RPC, SQL, hibernation).
      expect('errors' in bundle ? bundle.errors : '').toBe('');
    }
  });
});
