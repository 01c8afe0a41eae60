import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { decodeModuleMap, isModuleMapSource } from '../../common/module-map.js';
import { startTestAgent, type TestAgent } from './agent-harness.js';

// wrangler's no_bundle and find_additional_modules through `edge deploy --dry-run` (no
// cluster: the EdgeWorker it would apply is printed), then the source it produced served by a
// real agent: the module map is what reaches the isolates, unchanged.

const EDGE = join(REPO_ROOT, 'bin/edge.mjs');
const ADD_WASM = Buffer.from([0, 97, 115, 109, 1, 0, 0, 0, 1, 7, 1, 96, 2, 127, 127, 1, 127, 3, 2, 1, 0, 7, 7, 1, 3, 97, 100, 100, 0, 0, 10, 9, 1, 7, 0, 32, 0, 32, 1, 106, 11]);

const work = mkdtempSync(join(tmpdir(), 'edge-nobundle-'));
const file = (path: string, data: string | Buffer): void => { const p = join(work, path); mkdirSync(join(p, '..'), { recursive: true }); writeFileSync(p, data); };

interface Run { code: number; stdout: string; stderr: string }
const edge = (args: string[], cwd: string) => new Promise<Run>((done) => {
  const env = { ...process.env, EDGE_DEV_STATE: join(work, 'no-dev.json'), KUBECONFIG: join(work, 'no-kubeconfig'), EDGE_NATS_URL: '' };
  const child = spawn(process.execPath, ['--no-node-snapshot', EDGE, ...args], { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
  child.on('close', (code) => done({ code: code ?? -1, stdout, stderr }));
});
/** The inline source of the EdgeWorker `edge deploy --dry-run` prints. */
async function dryRun(cwd: string, args: string[] = []): Promise<string> {
  const r = await edge(['deploy', '--dry-run', ...args], cwd);
  expect(r.code, r.stderr).toBe(0);
  const ew = parseAllDocuments(r.stdout).map((d) => d.toJS() as { kind: string; spec: { source: { inline: string } } }).find((o) => o.kind === 'EdgeWorker')!;
  return ew.spec.source.inline;
}

let agent: TestAgent | undefined;
afterAll(async () => { await agent?.stop(); rmSync(work, { recursive: true, force: true }); });

beforeAll(() => {
  // no_bundle: ES modules, CommonJS, JSON by rule; text, data and wasm by the default rules.
  file('nb/wrangler.toml', [
    'name = "nobundle"', 'main = "src/index.js"', 'compatibility_date = "2025-01-01"', 'no_bundle = true', 'base_dir = "."',
    'rules = [', '  { type = "ESModule", globs = ["**/*.js"] },', '  { type = "CommonJS", globs = ["**/*.cjs"] },', '  { type = "JSON", globs = ["**/*.json"] },', ']',
  ].join('\n'));
  file('nb/src/index.js', [
    "import { greet } from './lib/greet.js';",
    "import page from '../data/page.html';",
    "import blob from '../data/blob.bin';",
    "import add from '../data/add.wasm';",
    "import cfg from '../data/cfg.json';",
    "import legacy from './legacy.cjs';",
    'export default { async fetch() {',
    '  const inst = await WebAssembly.instantiate(add);',
    '  return Response.json({ greet: greet(cfg.who), page, blob: new Uint8Array(blob).length, add: inst.exports.add(2, 3), legacy });',
    '} };',
  ].join('\n'));
  file('nb/src/lib/greet.js', "export const greet = (w) => 'hello ' + w;\n");
  file('nb/src/legacy.cjs', "module.exports = { cfg: require('../data/cfg.json').who };\n");
  file('nb/data/page.html', '<p>page</p>\n');
  file('nb/data/blob.bin', Buffer.from([1, 2, 3]));
  file('nb/data/add.wasm', ADD_WASM);
  file('nb/data/cfg.json', '{ "who": "modules" }\n');
  file('nb/notes.md', 'matched by no rule: not uploaded\n');
  // find_additional_modules while bundling: TypeScript bundled, the HTML a module of its own.
  file('fam/wrangler.toml', 'name = "partial"\nmain = "src/index.ts"\nfind_additional_modules = true\nbase_dir = "."\n');
  file('fam/src/index.ts', "import { shout } from './util';\nimport page from '../data/page.html';\nexport default { fetch(): Response { return new Response(shout(page)); } };\n");
  file('fam/src/util.ts', 'export const shout = (s: string): string => s.toUpperCase();\n');
  file('fam/data/page.html', '<p>partial</p>');
  // --no-bundle FILE with nothing beside it that a rule matches: one ES module, as before.
  file('single/worker.js', 'export default { fetch() { return new Response("single"); } };\n');
});

describe('edge deploy without bundling', () => {
  it('no_bundle uploads main and the modules the rules find as a module map, which an agent serves', async () => {
    const source = await dryRun(join(work, 'nb'));
    const map = decodeModuleMap(source)!;
    expect(map.mainModule).toBe('src/index.js');
    expect(Object.keys(map.modules).sort()).toEqual(['data/add.wasm', 'data/blob.bin', 'data/cfg.json', 'data/page.html', 'src/index.js', 'src/legacy.cjs', 'src/lib/greet.js']);
    expect(map.modules['src/legacy.cjs']).toHaveProperty('cjs');

    const fam = await dryRun(join(work, 'fam'));
    const partial = decodeModuleMap(fam)!;
    expect(partial.mainModule).toBe('src/index.js');
    expect(Object.keys(partial.modules).sort()).toEqual(['data/page.html', 'src/index.js']);
    const bundled = partial.modules['src/index.js'] as { js: string };
    expect(bundled.js).toContain('"../data/page.html"');
    expect(bundled.js).toContain('toUpperCase');

    const single = await dryRun(join(work, 'single'), ['--no-bundle', 'worker.js']);
    expect(isModuleMapSource(single)).toBe(false);

    agent = await startTestAgent([{ name: 'nobundle', source }, { name: 'partial', source: fam }, { name: 'single', source: single }]);
    const res = await agent.get('nobundle.test');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ greet: 'hello modules', page: '<p>page</p>\n', blob: 3, add: 5, legacy: { cfg: 'modules' } });
    expect(await (await agent.get('partial.test')).text()).toBe('<P>PARTIAL</P>');
    expect(await (await agent.get('single.test')).text()).toBe('single');
  }, 60_000);
});
