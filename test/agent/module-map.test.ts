import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeModuleMap, MODULE_MAP_HEADER, type ModuleMap } from '../../common/module-map.js';
import { TestWorker } from '../unit/shim/run-worker.js';
import { startTestAgent, type TestAgent, type WorkerSpecInput } from './agent-harness.js';

// Multi-module workers (common/module-map.ts) served by a real agent: the map travels as the
// worker's one source string (spec.source.inline here) and the isolate resolves imports and
// require() inside it. Hostile maps fail to load with an error naming the importer and the
// specifier, and never hang the host.

/** (module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add)) */
const ADD_WASM = Buffer.from([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x07, 0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7f,
  0x03, 0x02, 0x01, 0x00,
  0x07, 0x07, 0x01, 0x03, 0x61, 0x64, 0x64, 0x00, 0x00,
  0x0a, 0x09, 0x01, 0x07, 0x00, 0x20, 0x00, 0x20, 0x01, 0x6a, 0x0b,
]).toString('base64');

const HAPPY: ModuleMap = {
  mainModule: 'src/index.js',
  modules: {
    'src/index.js': { js: `
import { greet, boom } from './lib/x.js';
import page from '../assets/page.html';
import blob from '../assets/blob.bin';
import cfg from '../config.json';
import addWasm from '../assets/add.wasm';
import cjs from './cjs/main.cjs';
import cycle from './cjs/a.cjs';
export default {
  async fetch(req) {
    const path = new URL(req.url).pathname;
    if (path === '/boom') { try { boom(); } catch (e) { return new Response(e.stack); } }
    if (path === '/cjs-boom') { try { cjs.fail(); } catch (e) { return new Response(e.stack); } }
    const instance = await WebAssembly.instantiate(addWasm, {});
    return Response.json({
      greet: greet('there'),
      page,
      blob: [blob instanceof ArrayBuffer, Array.from(new Uint8Array(blob))],
      cfg,
      wasm: [addWasm instanceof WebAssembly.Module, instance.exports.add(40, 2)],
      cjs: { sum: cjs.sum, cfgA: cjs.cfgA, text: cjs.text, filename: cjs.filename, dirname: cjs.dirname, lazy: cjs.lazy(), sameCfg: cjs.sameCfg, sameWasm: cjs.wasm === addWasm, bytes: cjs.bytes },
      cycle,
      globals: [typeof globalThis.__edgeModuleValue, typeof globalThis.__edgeModuleDefine],
    });
  },
};
` },
    'src/lib/x.js': { js: "import { base } from '../util/base.js';\nexport const greet = (n) => base + n;\nexport function boom() {\n  throw new Error('boom');\n}\n" },
    'src/util/base.js': { js: "export const base = 'hi ';\n" },
    'assets/page.html': { text: '<h1>héllo</h1>\n' },
    'assets/blob.bin': { data: Buffer.from([0, 1, 2, 255]).toString('base64') },
    'config.json': { json: { a: 1, list: [1, 2] } },
    'assets/add.wasm': { wasm: ADD_WASM },
    'src/cjs/main.cjs': { cjs: [
      "const helper = require('./helper.cjs');",
      "const cfg = require('../../config.json');",
      'module.exports = {',
      '  sum: helper.add(2, 3), cfgA: cfg.a, text: require("../../assets/page.html"), filename: __filename, dirname: __dirname,',
      "  lazy: () => require('./helper.cjs').add(1, 1), sameCfg: cfg === require('../../config.json'),",
      "  wasm: require('../../assets/add.wasm'), bytes: new Uint8Array(require('../../assets/blob.bin')).length, fail: helper.fail,",
      '};',
    ].join('\n') },
    'src/cjs/helper.cjs': { cjs: "exports.add = (a, b) => a + b;\nexports.fail = () => { throw new Error('cjs boom'); };\n" },
    // A require cycle: b sees a's exports as they are when a requires b (Node's semantics).
    'src/cjs/a.cjs': { cjs: "exports.early = 'a-early';\nconst b = require('./b.cjs');\nexports.fromB = b.seen;\nexports.done = true;\n" },
    'src/cjs/b.cjs': { cjs: "const a = require('./a.cjs');\nexports.seen = a.early + ':' + String(a.done);\n" },
  },
};

const FETCH = 'export default { fetch() { return new Response("ok"); } };\n';
const mapOf = (main: string, modules: ModuleMap['modules']): string => encodeModuleMap({ mainModule: main, modules });

const THOUSAND: ModuleMap['modules'] = {
  'index.js': { js: Array.from({ length: 999 }, (_, i) => `import m${i} from './m/${i}.js';`).join('\n')
    + `\nconst sum = ${Array.from({ length: 999 }, (_, i) => `m${i}`).join(' + ')};\nexport default { fetch() { return new Response(String(sum)); } };\n` },
  ...Object.fromEntries(Array.from({ length: 999 }, (_, i) => [`m/${i}.js`, { js: `export default ${i};\n` }])),
};

// With nodejs_compat, require() in CommonJS reaches the Node modules, at the top level and after the load.
const NODE_CJS: WorkerSpecInput = { name: 'node-cjs', compatibilityFlags: ['nodejs_compat'], source: mapOf('worker.cjs', {
  'worker.cjs': { cjs: "const { Buffer } = require('node:buffer');\nconst top = Buffer.from('hi').toString('hex');\n"
    + "module.exports = { fetch() { const path = require('path'); return Response.json({ top, later: path.join('a', '..', 'b'), events: typeof require('events') }); } };\n" },
}) };

const HOSTILE: WorkerSpecInput[] = [
  { name: 'escape', source: mapOf('src/index.js', { 'src/index.js': { js: `import x from '../../etc/passwd';\n${FETCH}` } }) },
  // "src/lib/x.js" is a module of the happy worker, not of this one.
  { name: 'foreign', source: mapOf('index.js', { 'index.js': { js: `import { greet } from 'src/lib/x.js';\n${FETCH}` } }) },
  { name: 'missing', source: mapOf('a/index.js', { 'a/index.js': { js: `import './nope.js';\n${FETCH}` } }) },
  { name: 'cjs-missing', source: mapOf('index.js', { 'index.js': { js: `import c from './c.cjs';\n${FETCH}` }, 'c.cjs': { cjs: "require('./gone.cjs');" } }) },
  { name: 'self-cycle', source: mapOf('index.js', { 'index.js': { js: 'import c from "./c.cjs";\nexport default { fetch() { return Response.json(c); } };\n' }, 'c.cjs': { cjs: "exports.before = 1;\nmodule.exports.self = require('./c.cjs') === module.exports;\nmodule.exports.again = require('./c.cjs').before;\n" } }) },
  { name: 'thousand', source: mapOf('index.js', THOUSAND) },
  { name: 'too-many', source: '' },
  { name: 'spin', source: mapOf('index.js', { 'index.js': { js: `import './lib/spin.js';\n${FETCH}` }, 'lib/spin.js': { js: 'while (true) {}\n' } }) },
  { name: 'cjs-spin', source: mapOf('index.js', { 'index.js': { js: `import './spin.cjs';\n${FETCH}` }, 'spin.cjs': { cjs: 'for (;;) {}\n' } }) },
  { name: 'malformed', source: `${MODULE_MAP_HEADER}{"mainModule":"index.js","modules":{"index.js":{"py":"print(1)"}}}` },
];

let agent: TestAgent;
const logText = (): string => JSON.stringify(agent.logs);
const json = async (host: string, path = '/'): Promise<Record<string, unknown>> => {
  const res = await agent.get(host, path);
  const text = await res.text();
  expect(res.status, text).toBe(200);
  return JSON.parse(text) as Record<string, unknown>;
};

beforeAll(async () => {
  // A map of more than MODULE_MAP_LIMITS.modules cannot be encoded: written as the header and JSON directly.
  const tooMany = HOSTILE.find((w) => w.name === 'too-many')!;
  tooMany.source = MODULE_MAP_HEADER + JSON.stringify({ mainModule: 'index.js', modules: { ...THOUSAND, ...Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`x/${i}.js`, { js: '' }])) } });
  agent = await startTestAgent([{ name: 'mods', source: encodeModuleMap(HAPPY) }, NODE_CJS, ...HOSTILE]);
}, 60_000);
afterAll(async () => { await agent?.stop(); });

describe('a module map', () => {
  it('resolves ./ and ../ imports, and gives text, data, json, wasm and CommonJS modules their default exports', async () => {
    const r = await json('mods.test');
    expect(r).toMatchObject({
      greet: 'hi there',
      page: '<h1>héllo</h1>\n',
      blob: [true, [0, 1, 2, 255]],
      cfg: { a: 1, list: [1, 2] },
      wasm: [true, 42],
      cjs: { sum: 5, cfgA: 1, text: '<h1>héllo</h1>\n', filename: 'src/cjs/main.cjs', dirname: 'src/cjs', lazy: 2, sameCfg: true, sameWasm: true, bytes: 4 },
      cycle: { early: 'a-early', fromB: 'a-early:undefined', done: true },
      // The load's helpers are gone once it ends.
      globals: ['undefined', 'undefined'],
    });
  });

  it('names the module file and line in error stacks, ES and CommonJS alike', async () => {
    expect(await (await agent.get('mods.test', '/boom')).text()).toMatch(/src\/lib\/x\.js:4/);
    expect(await (await agent.get('mods.test', '/cjs-boom')).text()).toMatch(/src\/cjs\/helper\.cjs:2/);
  });

  it('loads a map of 1,000 modules', async () => {
    const res = await agent.get('thousand.test');
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(String((998 * 999) / 2));
  });

  it('a CommonJS main module, whose require() reaches node:* with nodejs_compat, also inside a handler', async () => {
    expect(await json('node-cjs.test')).toEqual({ top: '6869', later: 'b', events: 'function' });
  });

  it('a CommonJS module requiring itself gets its partial exports, no loop', async () => {
    expect(await json('self-cycle.test')).toEqual({ before: 1, self: true, again: 1 });
  });
});

describe('a hostile module map', () => {
  const refused = async (host: string, text: string): Promise<void> => {
    const res = await agent.get(host);
    expect(res.status).not.toBe(200);
    expect(logText()).toContain(text);
  };

  it('an import climbing out of the root is refused, naming the importer and the specifier', async () => {
    await refused('escape.test', 'module \\"src/index.js\\" imports \\"../../etc/passwd\\", which climbs out of the worker\'s root');
  });
  it("another worker's module name resolves to nothing here", async () => {
    await refused('foreign.test', 'No such module \\"src/lib/x.js\\" (imported from \\"index.js\\" as \\"src/lib/x.js\\")');
  });
  it('a missing module, by import and by require()', async () => {
    await refused('missing.test', 'No such module \\"a/nope.js\\" (imported from \\"a/index.js\\" as \\"./nope.js\\")');
    await refused('cjs-missing.test', 'No such module \\"gone.cjs\\" (required from \\"c.cjs\\" as \\"./gone.cjs\\")');
  });
  it('more modules than the limit, or a malformed map, fail to load naming the field', async () => {
    await refused('too-many.test', '1030 modules; at most 1024');
    await refused('malformed.test', 'the module map is invalid: modules.index.js: a module is exactly one of');
  });
  // Past spec.source.inline's limit: loaded straight into an isolate, as a bundle from the object store would be.
  it('a text module larger than the memory limit is refused before it is copied into the isolate', async () => {
    const source = mapOf('index.js', { 'index.js': { js: `import t from './big.txt';\n${FETCH}` }, 'big.txt': { text: 'x'.repeat(20 * 1024 * 1024) } });
    await expect(TestWorker.load(source, { name: 'huge-text', limits: { memoryMiB: 16 } })).rejects.toThrow('its modules hold 20.0 MiB, more than its memory limit (16 MiB)');
  });
  it('a text module that fits, but whose importer spends it past the memory limit, fails the load as out of memory', async () => {
    const source = mapOf('index.js', { 'index.js': { js: `import t from './big.txt';\nconst parts = [];\nfor (;;) parts.push(t.slice(parts.length % 7).toUpperCase());\n${FETCH}` }, 'big.txt': { text: 'x'.repeat(8 * 1024 * 1024) } });
    await expect(TestWorker.load(source, { name: 'text-bomb', limits: { memoryMiB: 16 } })).rejects.toThrow('ran out of memory while loading (its limit is 16 MiB)');
  });
  it('a module whose top level spins is stopped by the startup CPU limit, ES or CommonJS', async () => {
    await refused('spin.test', 'exceeded the startup CPU limit');
    await refused('cjs-spin.test', 'worker default/cjs-spin: its top level (global scope) exceeded the startup CPU limit');
    // The host kept serving throughout.
    expect((await agent.get('mods.test')).status).toBe(200);
  });
});
