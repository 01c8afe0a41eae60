import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crPath, KubeClient } from '../../operator/runtime/kube-client.js';
import { LocalCluster, QUICK_FAILOVER } from '../../cli/local/cluster.js';
import { REPO_ROOT } from '../../cli/local/tools.js';

// `edge deploy` with no file in a wrangler project directory, and `edge secret put`,
// against a real control plane with the operator and an agent: examples/wrangler-project
// deployed unchanged, then a project written here with the module kinds, rules, assets,
// environments and the keys that are refused.

const NS = 'wrangler';
const EDGE = join(REPO_ROOT, 'bin/edge.mjs');
const EXAMPLE = join(REPO_ROOT, 'examples/wrangler-project');

/** `(module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))` */
const ADD_WASM = Buffer.from([0, 97, 115, 109, 1, 0, 0, 0, 1, 7, 1, 96, 2, 127, 127, 1, 127, 3, 2, 1, 0, 7, 7, 1, 3, 97, 100, 100, 0, 0, 10, 9, 1, 7, 0, 32, 0, 32, 1, 106, 11]);
/** `(module (memory 4000))`: 250 MiB of memory with no maximum, over a 128 MiB worker's limit. */
const BIG_MEMORY_WASM = Buffer.from([0, 97, 115, 109, 1, 0, 0, 0, 5, 4, 1, 0, 0xa0, 0x1f]);

interface Run { code: number; stdout: string; stderr: string }
interface Res { status: number; type: string | undefined; text: string }

describe('edge deploy of a wrangler project', () => {
  let cluster: LocalCluster;
  let kube: KubeClient;
  const work = mkdtempSync(join(tmpdir(), 'edge-wrangler-test-'));
  const file = (name: string, data: string | Buffer) => { const p = join(work, name); mkdirSync(join(p, '..'), { recursive: true }); writeFileSync(p, data); return p; };
  const env = { ...process.env, EDGE_DEV_STATE: join(work, 'no-dev.json'), KUBECONFIG: '', EDGE_NATS_URL: '' };
  const edge = (args: string[], cwd: string, input?: string) => new Promise<Run>((resolveRun) => {
    const child = spawn(process.execPath, ['--no-node-snapshot', EDGE, ...args], { env, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    child.on('close', (code) => resolveRun({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
  const kubeArgs = () => ['--namespace', NS, '--kubeconfig', cluster.cp.kubeconfigPath];
  const deploy = (cwd: string, args: string[] = []) => edge(['deploy', ...args, ...kubeArgs()], cwd);
  const get = (host: string, path = '/', method = 'GET') => new Promise<Res>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: cluster.agent('eu-west').port, path, method, headers: { host }, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(15_000, () => req.destroy(new Error(`${method} ${host}${path}: no answer in 15 s`)));
    req.end();
  });

  beforeAll(async () => {
    cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: ['eu-west'] });
    kube = new KubeClient(cluster.kubeConfig);
    await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: NS } } });
    await cluster.startOperator('operator');
  }, 300_000);

  afterAll(async () => {
    await cluster?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('deploys examples/wrangler-project unchanged: HTML, wasm and JSON modules, a SQLite Durable Object from migrations, vars, assets', async () => {
    const r = await deploy(EXAMPLE);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('bundled wrangler.toml (index.js)');
    expect(r.stdout).toContain(`created DurableActor ${NS}/wrangler-project-counter (class Counter, sqlite storage)`);
    expect(r.stdout).toMatch(/wrangler-project is Ready/);
    const host = 'wrangler-project.localhost';
    expect(await get(host, '/')).toMatchObject({ status: 200, type: 'text/html; charset=utf-8', text: expect.stringContaining('<h1>Static assets from public/</h1>') });
    expect(await get(host, '/style.css')).toMatchObject({ status: 200, type: 'text/css; charset=utf-8', text: 'body { font-family: sans-serif; }\n' });
    expect(await get(host, '/index.html', 'HEAD')).toMatchObject({ status: 200, text: '' });
    expect(await get(host, '/api/hello')).toMatchObject({ status: 200, text: '<h1>hello from wrangler.toml</h1>\n' });
    expect(await get(host, '/api/add?a=2&b=40')).toMatchObject({ status: 200, text: '{"sum":42}' });
    expect(JSON.parse((await get(host, '/api/about')).text)).toEqual({ project: 'wrangler-project', modules: ['Text', 'CompiledWasm', 'JSON'] });
    expect((await get(host, '/api/count?name=a')).text).toBe('{"count":1}');
    expect((await get(host, '/api/count?name=a')).text).toBe('{"count":2}');
    expect(await get(host, '/nope.txt')).toMatchObject({ status: 404, text: 'Not Found' });
    const da = await kube.request<{ spec: { className: string; storage: { backend: string }; workerRef: { name: string } } }>('GET', crPath('durableactors', NS, 'wrangler-project-counter'));
    expect(da.spec).toMatchObject({ className: 'Counter', workerRef: { name: 'wrangler-project' }, storage: { backend: 'sqlite' } });
  });

  it('`edge secret put` stores stdin in a Secret, binds it, and a later deploy keeps it', async () => {
    expect((await get('wrangler-project.localhost', '/api/secret')).text).toBe('{"hasToken":false,"length":0}');
    const r = await edge(['secret', 'put', 'API_TOKEN', ...kubeArgs()], EXAMPLE, 's3cret-value\n');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('worker wrangler-project (from wrangler.toml)');
    expect(r.stdout).toContain(`wrote key API_TOKEN of Secret ${NS}/wrangler-project-secrets`);
    expect(r.stdout).toMatch(/bound env.API_TOKEN to EdgeWorker wrangler\/wrangler-project \(generation 2\)/);
    expect(r.stdout).toMatch(/wrangler-project is Ready/);
    expect((await get('wrangler-project.localhost', '/api/secret')).text).toBe('{"hasToken":true,"length":12}');
    const secret = await cluster.kubeConfig.makeApiClient(CoreV1Api).readNamespacedSecret({ namespace: NS, name: 'wrangler-project-secrets' });
    expect(Buffer.from(secret.data!.API_TOKEN!, 'base64').toString()).toBe('s3cret-value');
    expect(secret.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'EdgeWorker', name: 'wrangler-project' });
    // A second secret leaves the first; a redeploy (its own field manager) leaves both.
    expect((await edge(['secret', 'put', 'OTHER', '--name', 'wrangler-project', ...kubeArgs()], work, 'x')).code).toBe(0);
    const again = await deploy(EXAMPLE);
    expect(again.code).toBe(0);
    expect((await get('wrangler-project.localhost', '/api/secret')).text).toBe('{"hasToken":true,"length":12}');
    const ew = await kube.request<{ spec: { bindings: { secrets: { name: string }[] } } }>('GET', crPath('edgeworkers', NS, 'wrangler-project'));
    expect(ew.spec.bindings.secrets.map((s) => s.name).sort()).toEqual(['API_TOKEN', 'OTHER']);
    const none = await edge(['secret', 'put', 'X', '--name', 'no-such-worker', ...kubeArgs()], work, 'v');
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(`EdgeWorker ${NS}/no-such-worker not found: deploy it first`);
  });

  it('a project of its own: Data, a custom Text rule, wasm?module, --env, the refused keys listed', async () => {
    const dir = join(work, 'proj');
    file('proj/wrangler.jsonc', `// written by the test
{
  "name": "proj",
  "main": "src/worker.js",
  "rules": [{ "type": "Text", "globs": ["**/*.md"], "fallthrough": true }],
  "kv_namespaces": [{ "binding": "KV", "id": "abc" }],
  "triggers": { "crons": ["*/5 * * * *"] },
  "routes": [{ "pattern": "proj.test/*" }],
  "env": { "staging": { "routes": ["proj-staging.test/*"], "vars": { "WHERE": "staging" } } },
}
`);
    file('proj/src/add.wasm', ADD_WASM);
    file('proj/src/blob.bin', Buffer.from([1, 2, 3, 250]));
    file('proj/src/notes.md', '# notes\n');
    file('proj/src/worker.js', `import add from './add.wasm?module';
import blob from './blob.bin';
import notes from './notes.md';
export default {
  async fetch(request, env) {
    const { exports } = await WebAssembly.instantiate(add, {});
    return Response.json({ add: exports.add(20, 22), blob: blob instanceof ArrayBuffer ? [...new Uint8Array(blob)] : typeof blob, notes, where: env.WHERE ?? 'top' });
  },
};
`);
    const r = await deploy(dir);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('edge deploy: wrangler.jsonc: kv_namespaces is not supported by edge-isolates (no KV binding kind); it was left out');
    expect(r.stderr).toContain('edge deploy: wrangler.jsonc: triggers is not supported by edge-isolates (no cron triggers); it was left out');
    expect(JSON.parse((await get('proj.test', '/')).text)).toEqual({ add: 42, blob: [1, 2, 3, 250], notes: '# notes\n', where: 'top' });

    const s = await deploy(dir, ['--env', 'staging']);
    expect(s.code, s.stderr).toBe(0);
    expect(s.stdout).toContain(`created EdgeWorker ${NS}/proj-staging`);
    expect(JSON.parse((await get('proj-staging.test', '/')).text)).toMatchObject({ add: 42, where: 'staging' });
  });

  it('a .wasm module is compiled in the isolate under its memory limit: a 250 MiB memory bomb is refused at load', async () => {
    file('bomb/wrangler.toml', 'name = "bomb"\nmain = "i.js"\n');
    file('bomb/bomb.wasm', BIG_MEMORY_WASM);
    file('bomb/i.js', 'import m from "./bomb.wasm";\nexport default { async fetch() { await WebAssembly.instantiate(m, {}); return new Response("grew"); } };\n');
    const r = await deploy(join(work, 'bomb'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/bomb is not Ready: BundleInvalid: .*threw while loading: new WebAssembly.Module: 250.0 MiB of WebAssembly memory would put this worker over its memory limit \(128.0 MiB/);
  });

  it('refuses before writing anything: assets too big for the bundle, a class no migration creates', async () => {
    file('huge/wrangler.toml', 'name = "huge"\n[assets]\ndirectory = "public"\n');
    file('huge/public/big.bin', Buffer.alloc(800 * 1024, 7));
    const r = await deploy(join(work, 'huge'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/edge deploy: assets.directory .*public holds 819200 bytes; assets are embedded in the bundle/);
    file('nomig/wrangler.toml', 'name = "nomig"\nmain = "i.js"\n[[durable_objects.bindings]]\nname = "C"\nclass_name = "Counter"\n');
    file('nomig/i.js', 'export class Counter {}\nexport default { fetch() { return new Response("x") } };\n');
    const m = await deploy(join(work, 'nomig'));
    expect(m.code).toBe(1);
    expect(m.stderr).toContain('no migration creates class Counter');
    await expect(kube.request('GET', crPath('edgeworkers', NS, 'huge'))).rejects.toThrow(/404/);
    await expect(kube.request('GET', crPath('edgeworkers', NS, 'nomig'))).rejects.toThrow(/404/);
  });
});
