import { createHash, createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleWorker } from '../../cli/deploy.js';
import { startTestAgent, type TestAgent } from './agent-harness.js';

// nodejs_compat: workers bundled the way `edge deploy --compatibility-flag nodejs_compat`
// bundles them, served by a real agent (directory mode: spec.compatibilityFlags is carried
// from the manifest to the isolate), answering real HTTP.

const dir = mkdtempSync(join(tmpdir(), 'edge-nodecompat-'));
const FLAGS = ['nodejs_compat'];

async function bundle(name: string, source: string, flags: string[] = FLAGS): Promise<string> {
  const file = join(dir, name);
  writeFileSync(file, source);
  const out = await bundleWorker(file, { compatibilityFlags: flags });
  if ('errors' in out) throw new Error(out.errors);
  return out.code;
}

async function bundleFile(file: string): Promise<string> {
  const out = await bundleWorker(file, { compatibilityFlags: FLAGS });
  if ('errors' in out) throw new Error(out.errors);
  return out.code;
}

const MODULES_WORKER = `
import { Buffer } from 'node:buffer';
import { EventEmitter, once } from 'node:events';
import { AsyncLocalStorage } from 'node:async_hooks';
import util, { format, inspect, promisify, types, inherits, deprecate, TextEncoder } from 'node:util';
import process from 'node:process';
import crypto, { createHash, createHmac, randomBytes, randomUUID, timingSafeEqual, webcrypto, getRandomValues } from 'node:crypto';
import { Readable, Transform, pipeline } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import path from 'node:path';
import { URL as NodeURL, parse as parseUrl, format as formatUrl } from 'node:url';
import bareEvents from 'events';
import os from 'node:os';
import { channel, subscribe } from 'node:diagnostics_channel';
import { pipeline as pipelineP } from 'node:stream/promises';

const als = new AsyncLocalStorage();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function later(ms) { await sleep(ms); return als.getStore(); }
let served = 0;

const routes = {
  async buffer() {
    const b = Buffer.from('héllo wörld');
    return { b64: b.toString('base64'), hex: Buffer.from([1, 2, 255]).toString('hex'), concat: Buffer.concat([Buffer.from('a'), Buffer.from('b')]).toString(),
      int: (() => { const x = Buffer.alloc(4); x.writeUInt32BE(0xdeadbeef); return x.readUInt32LE(0); })(), isBuffer: Buffer.isBuffer(b), global: globalThis.Buffer === Buffer };
  },
  async events() {
    const e = new EventEmitter();
    const got = [];
    e.on('x', (v) => got.push(v));
    e.once('x', (v) => got.push('once:' + v));
    e.emit('x', 1); e.emit('x', 2);
    setTimeout(() => e.emit('ready', 'r'), 1);
    const [r] = await once(e, 'ready');
    return { got, r, listeners: e.listenerCount('x'), bare: bareEvents === EventEmitter || bareEvents.EventEmitter === EventEmitter };
  },
  async util() {
    function A() {} function B() {} inherits(B, A);
    const cbStyle = (x, cb) => setTimeout(() => cb(null, x * 2), 1);
    let warned = 0; const old = deprecate(() => 7, 'old');
    return { format: format('%s=%d %j', 'a', 42, { k: 1 }), inspect: inspect({ a: [1, { b: 2 }] }), promisified: await promisify(cbStyle)(21),
      isPromise: types.isPromise(Promise.resolve()), isDate: util.types.isDate(new Date()), inherits: new B() instanceof A,
      enc: Array.from(new TextEncoder().encode('hi')), deprecated: old(), warned };
  },
  async process() {
    const ticks = [];
    await new Promise((r) => process.nextTick((a) => { ticks.push(a); r(); }, 'tick'));
    return { env: process.env.GREETING, globalEnv: globalThis.process.env.GREETING, version: process.version, node: process.versions.node, ticks, platform: process.platform };
  },
  async crypto() {
    const input = 'the quick brown fox';
    const hashes = {};
    for (const a of ['md5', 'sha1', 'sha256', 'sha384', 'sha512']) hashes[a] = createHash(a).update(input.slice(0, 9)).update(input.slice(9)).digest('hex');
    const longKey = 'k'.repeat(200);
    return { hashes, b64: createHash('sha256').update(Buffer.from([0, 1, 2])).digest('base64'),
      hmac: createHmac('sha256', 'secret').update(input).digest('hex'), hmacLong: createHmac('sha512', longKey).update(input).digest('hex'),
      uuid: randomUUID(), bytes: randomBytes(16).length, tse: [timingSafeEqual(Buffer.from('ab'), Buffer.from('ab')), timingSafeEqual(Buffer.from('ab'), Buffer.from('ac'))],
      webcrypto: webcrypto === globalThis.crypto, subtle: typeof crypto.subtle.digest, grv: getRandomValues(new Uint8Array(4)).length };
  },
  async stream() {
    const upper = new Transform({ transform(chunk, _enc, cb) { cb(null, chunk.toString().toUpperCase()); } });
    const out = [];
    await new Promise((resolve, reject) => pipeline(Readable.from(['ab', 'cd']), upper, async function* (src) { for await (const c of src) out.push(c.toString()); }, (err) => err ? reject(err) : resolve()));
    const d = new StringDecoder('utf8');
    const euro = Buffer.from('€');
    return { out: out.join(''), decoded: d.write(euro.subarray(0, 1)) + d.write(euro.subarray(1)) + d.end() };
  },
  async path() {
    return { join: path.join('/a/b', '../c', 'd.txt'), ext: path.extname('x/y.tar.gz'), rel: path.relative('/a/b', '/a/c'), sep: path.sep, posix: path.posix.basename('/q/r.js') };
  },
  async url() {
    const u = parseUrl('https://user@example.com:8080/p/a?x=1#h', true);
    return { host: u.host, query: u.query.x, formatted: formatUrl({ protocol: 'https', host: 'e.com', pathname: '/z' }), whatwg: new NodeURL('https://e.com/a?b=1').searchParams.get('b') };
  },
  async small() {
    const got = [];
    subscribe('t:x', (m, name) => got.push([m.n, name]));
    const c = channel('t:x');
    c.publish({ n: 1 });
    const chunks = [];
    await pipelineP(Readable.from(['p', 'q']), new Transform({ objectMode: true, transform(ch, _e, cb) { chunks.push(String(ch)); cb(); } }));
    return { eol: os.EOL, platform: os.platform(), got, has: c.hasSubscribers, chunks };
  },
  async als(url) {
    const id = url.searchParams.get('id');
    return als.run(id, async () => {
      const seen = { start: als.getStore() };
      await null; seen.awaitValue = als.getStore();
      await Promise.resolve(); seen.awaitNative = als.getStore();
      await sleep(Number(url.searchParams.get('ms') ?? 5)); seen.awaitTimer = als.getStore();
      seen.then = await Promise.resolve().then(() => als.getStore());
      seen.catch = await Promise.reject(new Error('x')).catch(() => als.getStore());
      seen.finally = await new Promise((r) => { Promise.resolve().finally(() => r(als.getStore())); });
      seen.microtask = await new Promise((r) => queueMicrotask(() => r(als.getStore())));
      seen.timeout = await new Promise((r) => setTimeout(() => r(als.getStore()), 1));
      seen.interval = await new Promise((r) => { const t = setInterval(() => { clearInterval(t); r(als.getStore()); }, 1); });
      seen.nextTick = await new Promise((r) => process.nextTick(() => r(als.getStore())));
      const [a, b] = await Promise.all([als.run(id + '-a', () => later(6)), als.run(id + '-b', () => later(2))]);
      seen.interleaved = [a, b];
      seen.exit = als.exit(() => als.getStore()) ?? null;
      seen.end = als.getStore();
      return seen;
    });
  },
  async outside() { return { store: als.getStore() ?? null }; },
  async nest() {
    const depth = (n) => (n === 0 ? als.getStore() : als.run(n, () => depth(n - 1)));
    let deep;
    try { deep = depth(100_000); } catch (e) { deep = e instanceof RangeError ? 'RangeError' : String(e); }
    let last;
    for (let i = 0; i < 100_000; i++) last = als.run(i, () => als.getStore());
    return { deep, last, after: als.getStore() ?? null };
  },
  async bigHash() {
    let refused;
    try { createHash('sha256').update(new Uint8Array(100 * 1024 * 1024)); } catch (e) { refused = e instanceof RangeError ? e.message : 'other: ' + e; }
    const chunk = new Uint8Array(1024 * 1024);
    for (let i = 0; i < chunk.length; i++) chunk[i] = i & 0xff;
    const h = createHash('sha256');
    for (let i = 0; i < 40; i++) h.update(chunk);
    return { refused, digest: h.digest('hex') };
  },
  async exit() { process.exit(1); return { after: 'exit' }; },
  async count() { return { served }; },
};

export default {
  async fetch(request) {
    served++;
    const url = new URL(request.url);
    const route = routes[url.pathname.slice(1)];
    if (!route) return new Response('no route', { status: 404 });
    return Response.json(await route(url));
  },
};
`;

const PLAIN_WORKER = `
export default {
  fetch() { return Response.json({ buffer: typeof Buffer, process: typeof process, global: typeof global }); },
};
`;


let agent: TestAgent;
beforeAll(async () => {
  agent = await startTestAgent([
    { name: 'mods', source: await bundle('mods.js', MODULES_WORKER), compatibilityFlags: FLAGS, vars: { GREETING: 'hi from vars' },
      limits: { cpuMsPerRequest: 2000, wallMsPerRequest: 20_000, memoryMiB: 256 }, minWarmIsolates: 1 },
    { name: 'plain', source: await bundle('plain.js', PLAIN_WORKER, []) },
    { name: 'npm', source: await bundleFile(fileURLToPath(new URL('fixtures/nodejs-compat-npm.js', import.meta.url))), compatibilityFlags: FLAGS, limits: { cpuMsPerRequest: 500 } },
    { name: 'hono', source: await bundleFile(fileURLToPath(new URL('fixtures/nodejs-compat-hono.js', import.meta.url))), compatibilityFlags: FLAGS, limits: { cpuMsPerRequest: 500 } },
    // Not bundled: a worker that imports node:fs reaches the isolate's loader.
    { name: 'fs', source: 'import fs from "node:fs";\nexport default { fetch() { return new Response(typeof fs); } };\n', compatibilityFlags: FLAGS },
  ], { maxIsolatesPerWorker: 1 });
}, 60_000);
afterAll(async () => {
  await agent?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function json(path: string, host = 'mods.test'): Promise<Record<string, unknown>> {
  const res = await agent.get(host, path);
  const text = await res.text();
  expect(res.status, text).toBe(200);
  return JSON.parse(text) as Record<string, unknown>;
}

const INPUT = 'the quick brown fox';

describe('nodejs_compat modules', () => {
  it('node:buffer, and the Buffer global with the flag', async () => {
    expect(await json('/buffer')).toEqual({ b64: Buffer.from('héllo wörld').toString('base64'), hex: '0102ff', concat: 'ab', int: 0xefbeadde, isBuffer: true, global: true });
  });
  it('node:events (and the bare "events" resolves to the same module)', async () => {
    expect(await json('/events')).toEqual({ got: [1, 'once:1', 2], r: 'r', listeners: 1, bare: true });
  });
  it('node:util', async () => {
    const r = await json('/util');
    expect(r).toMatchObject({ format: 'a=42 {"k":1}', promisified: 42, isPromise: true, isDate: true, inherits: true, enc: [104, 105], deprecated: 7 });
    expect(r.inspect).toContain('b: 2');
  });
  it('node:process: env from the text bindings, nextTick, versions', async () => {
    expect(await json('/process')).toEqual({ env: 'hi from vars', globalEnv: 'hi from vars', version: 'v22.14.0', node: '22.14.0', ticks: ['tick'], platform: 'linux' });
  });
  it('node:crypto: hashes and HMAC match Node\'s, random values, timingSafeEqual, webcrypto', async () => {
    const r = await json('/crypto');
    expect(r.hashes).toEqual(Object.fromEntries(['md5', 'sha1', 'sha256', 'sha384', 'sha512'].map((a) => [a, createHash(a).update(INPUT).digest('hex')])));
    expect(r.b64).toBe(createHash('sha256').update(Buffer.from([0, 1, 2])).digest('base64'));
    expect(r.hmac).toBe(createHmac('sha256', 'secret').update(INPUT).digest('hex'));
    expect(r.hmacLong).toBe(createHmac('sha512', 'k'.repeat(200)).update(INPUT).digest('hex'));
    expect(r.uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(r).toMatchObject({ bytes: 16, tse: [true, false], webcrypto: true, subtle: 'function', grv: 4 });
  });
  it('node:stream (readable-stream) and node:string_decoder', async () => {
    expect(await json('/stream')).toEqual({ out: 'ABCD', decoded: '€' });
  });
  it('node:path (posix) and node:url', async () => {
    expect(await json('/path')).toEqual({ join: '/a/c/d.txt', ext: '.gz', rel: '../c', sep: '/', posix: 'r.js' });
    expect(await json('/url')).toEqual({ host: 'example.com:8080', query: '1', formatted: 'https://e.com/z', whatwg: '1' });
  });
  it('node:os, node:diagnostics_channel (the Agents SDK imports both) and node:stream/promises', async () => {
    expect(await json('/small')).toEqual({ eol: '\n', platform: 'linux', got: [[1, 't:x']], has: true, chunks: ['p', 'q'] });
  });
  it('a published npm package that needs Buffer, events and string_decoder (readable-stream) bundles unmodified and runs', async () => {
    const res = await agent.get('npm.test', '/');
    expect(await res.text()).toBe('npm stream');
  });
  it('without the flag there is no Buffer, process or global, and a node: import does not bundle, naming the flag', async () => {
    expect(await json('/', 'plain.test')).toEqual({ buffer: 'undefined', process: 'undefined', global: 'undefined' });
    const file = join(dir, 'needs-flag.js');
    writeFileSync(file, 'import { Buffer } from "node:buffer";\nexport default { fetch() { return new Response(Buffer.from("x")); } };\n');
    const out = await bundleWorker(file);
    expect('errors' in out && out.errors).toContain('"node:buffer", which needs the nodejs_compat compatibility flag');
  });
  it('node:fs is refused with a clear error: at bundle time, and by the isolate for an unbundled worker', async () => {
    const file = join(dir, 'fs.js');
    writeFileSync(file, 'import { readFileSync } from "node:fs";\nexport default { fetch() { return new Response(readFileSync("/etc/passwd")); } };\n');
    const out = await bundleWorker(file, { compatibilityFlags: FLAGS });
    expect('errors' in out && out.errors).toContain('"node:fs", a Node built-in this runtime does not provide');
    const res = await agent.get('fs.test', '/');
    expect(res.status).not.toBe(200);
    expect(JSON.stringify(agent.logs)).toContain('imports \\"node:fs\\", a Node built-in this runtime does not provide');
  });
});

describe('AsyncLocalStorage', () => {
  it('propagates across await, then/catch/finally, queueMicrotask, timers and nextTick, and interleaved runs keep their own store', async () => {
    const r = await json('/als?id=req1');
    expect(r).toEqual({
      start: 'req1', awaitValue: 'req1', awaitNative: 'req1', awaitTimer: 'req1', then: 'req1', catch: 'req1', finally: 'req1',
      microtask: 'req1', timeout: 'req1', interval: 'req1', nextTick: 'req1', interleaved: ['req1-a', 'req1-b'], exit: null, end: 'req1',
    });
  });
  it('does not leak between concurrent requests of one isolate, nor into a later request', async () => {
    const before = (await json('/count')).served as number;
    const ids = Array.from({ length: 12 }, (_, i) => `c${i}`);
    const results = await Promise.all(ids.map((id, i) => json(`/als?id=${id}&ms=${(i * 7) % 20}`)));
    for (const [i, r] of results.entries()) {
      for (const [k, v] of Object.entries(r)) {
        if (k === 'interleaved') expect(v).toEqual([`${ids[i]}-a`, `${ids[i]}-b`]);
        else if (k !== 'exit') expect(v, k).toBe(ids[i]);
      }
    }
    // One isolate (maxIsolatesPerWorker 1) served all of them.
    expect((await json('/count')).served).toBe(before + ids.length + 1);
    expect(await json('/outside')).toEqual({ store: null });
  });
});

describe('AsyncLocalStorage in a real framework', () => {
  it('a Hono middleware\'s run() reaches the handler after its awaits, per request, under concurrency', async () => {
    const ids = Array.from({ length: 8 }, (_, i) => `h${i}`);
    const got = await Promise.all(ids.map((id, i) => json(`/who?id=${id}&ms=${(i * 5) % 12}`, 'hono.test')));
    expect(got).toEqual(ids.map((id) => ({ afterTimer: id, afterAwait: id })));
  });
});

describe('nodejs_compat, hostile', () => {
  it('100k nested runs end in a catchable RangeError (or finish) and leave the context as it was; 100k sequential runs are fine', async () => {
    const r = await json('/nest');
    expect(['RangeError', 1]).toContain(r.deep);
    expect(r).toMatchObject({ last: 99_999, after: null });
  });
  it('createHash refuses a 100 MiB input with a RangeError naming the bound, and hashes 40 MiB fed in parts correctly', async () => {
    const r = await json('/bigHash');
    expect(r.refused).toContain('at most 67108864 bytes per hash');
    const chunk = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < chunk.length; i++) chunk[i] = i & 0xff;
    const h = createHash('sha256');
    for (let i = 0; i < 40; i++) h.update(chunk);
    expect(r.digest).toBe(h.digest('hex'));
  });
  it('process.exit() fails only the request that called it; the isolate serves the next one', async () => {
    const before = (await json('/count')).served as number;
    const res = await agent.get('mods.test', '/exit');
    expect(res.status).toBe(500);
    expect((await json('/count')).served).toBe(before + 2);
  });
});
