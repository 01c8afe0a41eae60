import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { DurableActorSpecSchema, EdgeWorkerSpecSchema } from '../../common/api/index.js';
import { assetsModule, MAX_ASSET_BYTES, type AssetsConfig } from '../../cli/assets.js';
import { bundleWorker } from '../../cli/deploy.js';
import { effectiveRules, globToRegExp, ruleFor } from '../../cli/module-rules.js';
import { actorName, findWranglerConfig, loadWranglerProject, routeFromPattern, WranglerConfigError } from '../../cli/wrangler-config.js';

// The wrangler config as `edge deploy` reads it: each key honoured, each refused with its
// message, environments, migrations as DurableActors, and the module rules.

const dirs: string[] = [];
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

function project(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'wrangler-config-'));
  dirs.push(dir);
  for (const [p, text] of Object.entries(files)) { mkdirSync(join(dir, p, '..'), { recursive: true }); writeFileSync(join(dir, p), text); }
  return dir;
}
const load = (dir: string, env?: string) => loadWranglerProject(findWranglerConfig(dir)!, env);

const TOML = `
name = "shop"
main = "src/index.js"
compatibility_date = "2025-04-01"
account_id = "abc"
workers_dev = true

[vars]
GREETING = "hello"
LIMITS = { max = 3 }

[[durable_objects.bindings]]
name = "CARTS"
class_name = "Cart"

[[durable_objects.bindings]]
name = "LEGACY"
class_name = "OldCounter"

[[durable_objects.bindings]]
name = "OTHER"
class_name = "Room"
script_name = "chat"

[[migrations]]
tag = "v1"
new_classes = ["Counter"]

[[migrations]]
tag = "v2"
new_sqlite_classes = ["Cart", "Gone"]
renamed_classes = [{ from = "Counter", to = "OldCounter" }]

[[migrations]]
tag = "v3"
deleted_classes = ["Gone"]

[[services]]
binding = "AUTH"
service = "auth"
entrypoint = "Checker"

[ai]
binding = "AI"

[[rules]]
type = "Text"
globs = ["**/*.md"]
fallthrough = true

[limits]
cpu_ms = 200


[[kv_namespaces]]
binding = "KV"
id = "x"

[[r2_buckets]]
binding = "B"
bucket_name = "b"

[triggers]
crons = ["* * * * *"]

[assets]
directory = "public"
binding = "ASSETS"

[env.staging]
routes = ["staging.shop.example/*"]
vars = { GREETING = "hi from staging" }

[env.prod]
name = "shop-live"
route = { pattern = "shop.example", custom_domain = true }
`;

describe('wrangler config', () => {
  const dir = project({ 'wrangler.toml': TOML, 'src/index.js': 'export default {}', 'public/index.html': '<p>x</p>' });

  it('maps each honoured key onto the EdgeWorker spec, which the API schema accepts', () => {
    const p = load(dir);
    expect(p.name).toBe('shop');
    expect(p.main).toBe(join(dir, 'src/index.js'));
    expect(p.spec.compatibilityDate).toBe('2025-04-01');
    expect(p.spec.bindings?.vars).toEqual({ GREETING: 'hello', LIMITS: '{"max":3}' });
    expect(p.spec.bindings?.services).toEqual([{ name: 'AUTH', worker: 'auth', entrypoint: 'Checker' }]);
    expect(p.spec.limits).toEqual({ cpuMsPerRequest: 200, wallMsPerRequest: 30_000 });
    expect(p.assets).toEqual({ directory: join(dir, 'public'), binding: 'ASSETS' });
    expect(p.rules).toEqual([{ type: 'Text', globs: ['**/*.md'], fallthrough: true }]);
    expect(p.aiBindingsWithoutModel).toEqual(['AI']);
    expect(EdgeWorkerSpecSchema.safeParse({ ...p.spec, source: { inline: 'x' } }).success).toBe(true);
  });

  it('turns migrations into DurableActors: new_classes kv, new_sqlite_classes sqlite, a rename keeps the actor, a delete keeps its data', () => {
    const p = load(dir);
    expect(p.actors.map((a) => [a.metadata.name, a.spec.className, a.spec.storage.backend])).toEqual([
      ['shop-cart', 'Cart', 'sqlite'],
      ['shop-counter', 'OldCounter', 'kv'],
    ]);
    for (const a of p.actors) expect(DurableActorSpecSchema.safeParse(a.spec).success).toBe(true);
    expect(p.spec.bindings?.actors).toEqual([
      { name: 'CARTS', actor: 'shop-cart' },
      { name: 'LEGACY', actor: 'shop-counter' },
      { name: 'OTHER', actor: 'chat-room' },
    ]);
    expect(p.notes).toContain('wrangler.toml: migrations renamed_classes Counter -> OldCounter: DurableActor shop-counter keeps its name and storage and now runs class OldCounter');
    expect(p.notes).toContain('wrangler.toml: migrations deleted_classes Gone: DurableActor shop-gone and its storage were NOT deleted; delete them with `kubectl delete durableactor shop-gone`');
  });

  it('lists every key it cannot honour with a message instead of ignoring it', () => {
    const p = load(dir);
    expect(p.notes).toContain('wrangler.toml: kv_namespaces is not supported by edge-isolates (no KV binding kind); it was left out');
    expect(p.notes).toContain('wrangler.toml: r2_buckets is not supported by edge-isolates (no R2 binding kind); it was left out');
    expect(p.notes).toContain('wrangler.toml: triggers is not supported by edge-isolates (no cron triggers); it was left out');
    expect(p.notes).toContain('wrangler.toml: account_id has no meaning on edge-isolates; ignored');
    expect(p.notes).toContain('wrangler.toml: workers_dev has no meaning on edge-isolates; ignored');
  });

  it('refuses compatibility flags the EdgeWorker API cannot carry, naming them', () => {
    const d = project({ 'wrangler.json': JSON.stringify({ name: 'f', main: 'i.js', compatibility_flags: ['no_such_flag_at_all'] }), 'i.js': '' });
    const p = load(d);
    expect(p.notes.some((n) => n.startsWith('wrangler.json: compatibility_flags "no_such_flag_at_all" is not'))).toBe(true);
    expect((p.spec as Record<string, unknown>).compatibilityFlags).toBeUndefined();
  });

  it('[env.NAME]: inherits the inheritable keys, names the worker NAME-ENV, and says which top-level keys it does not repeat', () => {
    const s = load(dir, 'staging');
    expect(s.name).toBe('shop-staging');
    expect(s.main).toBe(join(dir, 'src/index.js'));
    expect(s.spec.routes).toEqual([{ host: 'staging.shop.example', pathPrefix: '/' }]);
    expect(s.spec.bindings?.vars).toEqual({ GREETING: 'hi from staging' });
    expect(s.spec.bindings?.services).toBeUndefined();
    expect(s.assets?.binding).toBe('ASSETS');
    expect(s.notes.find((n) => n.startsWith('wrangler.toml: [env.staging] does not repeat'))).toMatch(/durable_objects, .*services, ai, .*kv_namespaces/);
    const prod = load(dir, 'prod');
    expect(prod.name).toBe('shop-live');
    expect(prod.spec.routes).toEqual([{ host: 'shop.example', pathPrefix: '/' }]);
    expect(() => load(dir, 'nope')).toThrow('wrangler.toml: no [env.nope] (environments: staging, prod)');
  });

  it('reads wrangler.jsonc with comments and trailing commas, and prefers json over toml', () => {
    const d = project({
      'wrangler.jsonc': '// a comment\n{ "name": "j", "main": "i.js", /* more */ "vars": { "A": "1", }, }\n',
      'wrangler.toml': 'name = "t"\nmain = "i.js"\n',
      'i.js': '',
    });
    expect(findWranglerConfig(d)).toBe(join(d, 'wrangler.jsonc'));
    expect(load(d).spec.bindings?.vars).toEqual({ A: '1' });
    const bad = project({ 'wrangler.json': '{ "name": "x", }}', 'i.js': '' });
    expect(() => load(bad)).toThrow(WranglerConfigError);
  });

  it('refuses what cannot be deployed at all, saying what to add', () => {
    expect(() => load(project({ 'wrangler.toml': 'main = "i.js"\n', 'i.js': '' }))).toThrow('wrangler.toml: name is required');
    expect(() => load(project({ 'wrangler.toml': 'name = "x"\n' }))).toThrow('wrangler.toml: main is required (or assets, for a static site)');
    expect(() => load(project({ 'wrangler.toml': 'name = "x"\nmain = "missing.js"\n' }))).toThrow('wrangler.toml: main missing.js does not exist');
    expect(() => load(project({ 'wrangler.toml': 'name = "Bad_Name"\nmain = "i.js"\n', 'i.js': '' }))).toThrow(/must be a DNS label/);
    expect(() => load(project({
      'wrangler.toml': 'name = "x"\nmain = "i.js"\n[[durable_objects.bindings]]\nname = "C"\nclass_name = "Counter"\n', 'i.js': '',
    }))).toThrow('wrangler.toml: durable_objects.bindings C: no migration creates class Counter (add [[migrations]] with new_sqlite_classes = ["Counter"])');
    expect(() => load(project({ 'wrangler.toml': 'name = "x"\nmain = "i.js"\n[[rules]]\ntype = "Python"\nglobs = ["*.py"]\n', 'i.js': '' })))
      .toThrow('wrangler.toml: rules: type "Python" is not one of ESModule, CommonJS, Text, Data, CompiledWasm, JSON');
  });

  it('route patterns become hosts and path prefixes', () => {
    expect(routeFromPattern('example.com/*')).toEqual({ host: 'example.com' });
    expect(routeFromPattern('https://Example.com/api/*')).toEqual({ host: 'example.com', pathPrefix: '/api/' });
    expect(routeFromPattern('*.example.com/*')).toEqual({ host: '*.example.com' });
    expect(routeFromPattern('shop.example')).toEqual({ host: 'shop.example' });
    expect(() => routeFromPattern('example.com/*/x')).toThrow(/only at the end/);
    expect(actorName('shop', 'ShoppingCart')).toBe('shop-shopping-cart');
  });
});

describe('module rules', () => {
  it('apply wrangler\'s defaults, a custom rule first, and replace a default of the same type unless it falls through', () => {
    const r = effectiveRules();
    expect(ruleFor(r, '/p', '/p/src/page.html')).toBe('Text');
    expect(ruleFor(r, '/p', '/p/q.sql')).toBe('Text');
    expect(ruleFor(r, '/p', '/p/a/b/data.bin')).toBe('Data');
    expect(ruleFor(r, '/p', '/p/add.wasm')).toBe('CompiledWasm');
    expect(ruleFor(r, '/p', '/p/add.wasm', '?module')).toBe('CompiledWasm');
    expect(ruleFor(r, '/p', '/p/index.js')).toBeUndefined();
    const md = effectiveRules([{ type: 'Text', globs: ['**/*.md'] }]);
    expect(ruleFor(md, '/p', '/p/readme.md')).toBe('Text');
    expect(ruleFor(md, '/p', '/p/page.html')).toBeUndefined(); // the default Text rule was replaced
    const fall = effectiveRules([{ type: 'Text', globs: ['**/*.md'], fallthrough: true }]);
    expect(ruleFor(fall, '/p', '/p/page.html')).toBe('Text');
    expect(ruleFor(effectiveRules([{ type: 'Data', globs: ['assets/*.png'] }]), '/p', '/p/assets/x.png')).toBe('Data');
  });

  it('globs: ** spans directories, * and ? stay within a name, {a,b} alternates', () => {
    expect(globToRegExp('**/*.txt').test('a/b/c.txt')).toBe(true);
    expect(globToRegExp('src/*.txt').test('src/a/c.txt')).toBe(false);
    expect(globToRegExp('*.{png,jpg}').test('x.jpg')).toBe(true);
    expect(globToRegExp('a?.txt').test('ab.txt')).toBe(true);
    expect(globToRegExp('a.txt').test('abtxt')).toBe(false);
  });
});

describe('assets embedded in the bundle', () => {
  /** The project's bundle, imported in Node (Request and Response are Node's own). */
  async function bundled(files: Record<string, string>, assets: AssetsConfig, main?: string) {
    const dir = project(files);
    const out = await bundleWorker(main && join(dir, main), { root: dir, assets: { ...assets, directory: join(dir, assets.directory) } });
    if ('errors' in out) throw new Error(out.errors);
    const f = join(dir, 'out.mjs');
    writeFileSync(f, out.code);
    const mod = (await import(pathToFileURL(f).href)) as { default: { fetch(r: Request, env: object, ctx: object): Promise<Response> } & (new (ctx: object, env: object) => { fetch(r: Request): Promise<Response> }) };
    return mod.default;
  }
  const site = { 'public/index.html': '<p>home</p>', 'public/about.html': '<p>about</p>', 'public/docs/index.html': '<p>docs</p>', 'public/app.js': 'x', 'public/404.html': 'gone', 'wrangler.toml': 'secret' };
  const call = async (w: Awaited<ReturnType<typeof bundled>>, path: string, method = 'GET') => {
    const r = await w.fetch(new Request(`http://x${path}`, { method }), { VAR: 'v' }, {});
    return [r.status, r.headers.get('content-type'), await r.text()];
  };

  it('answers GET and HEAD of an asset before the worker, with its content type and the html handling of wrangler', async () => {
    const w = await bundled({ ...site, 'src/i.js': 'export default { fetch(req, env) { return env.ASSETS.fetch(new Request(new URL("/about", req.url))).then(async (a) => new Response("worker " + env.VAR + " " + await a.text())); } };' },
      { directory: 'public', binding: 'ASSETS' }, 'src/i.js');
    expect(await call(w, '/')).toEqual([200, 'text/html; charset=utf-8', '<p>home</p>']);
    expect(await call(w, '/about')).toEqual([200, 'text/html; charset=utf-8', '<p>about</p>']);
    expect(await call(w, '/docs/')).toEqual([200, 'text/html; charset=utf-8', '<p>docs</p>']);
    expect(await call(w, '/docs')).toEqual([200, 'text/html; charset=utf-8', '<p>docs</p>']);
    expect(await call(w, '/app.js')).toEqual([200, 'text/javascript; charset=utf-8', 'x']);
    expect(await call(w, '/app.js', 'HEAD')).toEqual([200, 'text/javascript; charset=utf-8', '']);
    // Not an asset, or not a GET: the worker, with env.ASSETS beside its own env.
    expect(await call(w, '/api')).toEqual([200, 'text/plain;charset=UTF-8', 'worker v <p>about</p>']);
    expect((await call(w, '/app.js', 'POST'))[2]).toBe('worker v <p>about</p>');
  });

  it('serves only the embedded files: no traversal, no file outside the directory', async () => {
    const w = await bundled(site, { directory: 'public', notFoundHandling: 'none' });
    for (const p of ['/../wrangler.toml', '/%2e%2e/wrangler.toml', '/..%2fwrangler.toml', '/%E0%A4%A', '/public/index.html']) {
      expect(await call(w, p)).toEqual([404, 'text/plain; charset=utf-8', 'Not Found']);
    }
  });

  it('not_found_handling and run_worker_first as wrangler has them; an assets-only project; a class default export', async () => {
    const spa = await bundled(site, { directory: 'public', notFoundHandling: 'single-page-application' });
    expect(await call(spa, '/some/route')).toEqual([200, 'text/html; charset=utf-8', '<p>home</p>']);
    const page = await bundled(site, { directory: 'public', notFoundHandling: '404-page' });
    expect(await call(page, '/missing')).toEqual([404, 'text/html; charset=utf-8', 'gone']);
    const first = await bundled({ ...site, 'i.js': 'export default { fetch() { return new Response("worker first"); } };' }, { directory: 'public', runWorkerFirst: true }, 'i.js');
    expect(await call(first, '/')).toEqual([200, 'text/plain;charset=UTF-8', 'worker first']);
    const cls = await bundled({ ...site, 'c.js': 'export default class { constructor(ctx, env) { this.env = env; } async fetch() { return new Response("class " + (await (await this.env.A.fetch("/about")).text())); } };' }, { directory: 'public', binding: 'A' }, 'c.js');
    const inst = new cls({}, {});
    expect(await (await inst.fetch(new Request('http://x/'))).text()).toBe('<p>home</p>');
    expect(await (await inst.fetch(new Request('http://x/x'))).text()).toBe('class <p>about</p>');
  });

  it('refuses a directory too big to embed, saying the limit', () => {
    const dir = project({ 'public/big.bin': 'x'.repeat(MAX_ASSET_BYTES + 1) });
    expect(() => assetsModule({ directory: join(dir, 'public') })).toThrow(`holds ${MAX_ASSET_BYTES + 1} bytes; assets are embedded in the bundle, which a ConfigMap caps at 1 MiB, so at most ${MAX_ASSET_BYTES} bytes of assets are served`);
  });
});
