import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_VERSION } from '../../common/api/index.js';
import { EDGE_BIN } from '../../cli/local/cluster.js';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { waitFor } from '../../cli/local/ports.js';
import { crPath, KubeClient } from '../../operator/runtime/kube-client.js';
import { freshNamespace, sharedControlPlane } from '../harness/shared.js';

// What `edge status` loads, by module tracing (never by timing): it runs from dist/ (bundled on
// first use when the sources are newer), with neither tsx nor esbuild, and talks to the
// apiserver without client-node, zod or the NATS client. Each of those cost it tenths of a
// second of CPU to a second; together they made it 2-3 s, against kubectl's 0.1.

const run = promisify(execFile);
const HEAVY = ['tsx', 'esbuild', 'typescript', '@kubernetes/client-node', 'zod', 'nats'];

describe('edge status loads only what it needs', () => {
  const { kubeConfig, kubeconfigPath } = sharedControlPlane();
  const dir = mkdtempSync(join(tmpdir(), 'edge-trace-'));
  const log = join(dir, 'loaded.txt');
  const hooks = join(dir, 'hooks.mjs');
  const register = join(dir, 'register.mjs');
  let ns: string;
  const env: NodeJS.ProcessEnv = { ...process.env, EDGE_DEV_STATE: join(dir, 'no-dev.json') };
  delete env.EDGE_FROM_SOURCE;

  beforeAll(async () => {
    ns = await freshNamespace(kubeConfig, 'trace');
    const kube = new KubeClient(kubeConfig);
    // A just-started apiserver answers 429 for a while on resources whose CRD just came in.
    await waitFor('the custom resources served', async () => {
      try { await Promise.all(['edgeworkers', 'durableactors'].map((p) => kube.request('GET', crPath(p, ns)))); return true; } catch { return false; }
    }, 60_000, 200);
    await kube.request('POST', crPath('edgeworkers', ns), {
      body: { apiVersion: API_VERSION, kind: 'EdgeWorker', metadata: { name: 'traced' }, spec: { source: { inline: 'export default { fetch() { return new Response("x"); } };' } } },
    });
    // Every module the command resolves, appended from the loader thread as it goes.
    writeFileSync(hooks, `import { appendFileSync } from 'node:fs';
export async function resolve(spec, ctx, next) {
  const r = await next(spec, ctx);
  appendFileSync(${JSON.stringify(log)}, r.url + '\\n');
  return r;
}
`);
    writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);
    // Brings dist/ up to date first if an edit made it stale: the traced run is a run like every later one.
    await run(process.execPath, ['--no-node-snapshot', EDGE_BIN, '--help'], { env, cwd: REPO_ROOT });
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('runs from dist/ without tsx, esbuild, client-node, zod or the NATS client', async () => {
    const { stdout } = await run(process.execPath, ['--no-node-snapshot', '--import', register, EDGE_BIN, 'status', '--namespace', ns, '--kubeconfig', kubeconfigPath], { env, cwd: REPO_ROOT });
    expect(stdout).toMatch(new RegExp(`^${ns}\\s+traced\\s`, 'm'));
    const loaded = readFileSync(log, 'utf8').split('\n').filter((u) => u.startsWith('file:')).map((u) => fileURLToPath(u));
    const dist = join(REPO_ROOT, 'dist');
    expect(loaded).toContain(join(dist, 'edge.js'));
    // dist/ is a bundle: what went into each of its files is in esbuild's metafile.
    const meta = JSON.parse(readFileSync(join(dist, 'meta.json'), 'utf8')) as { outputs: Record<string, { inputs: Record<string, unknown> }> };
    const sources = loaded.filter((f) => f.startsWith(dist + sep)).flatMap((f) => {
      const out = meta.outputs[relative(dist, f)];
      if (!out) throw new Error(`${f} is not in dist/meta.json`);
      return Object.keys(out.inputs);
    });
    expect(sources).toContain('cli/status.ts');
    const packageOf = (path: string) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(path)?.[1];
    const packages = new Set([...loaded, ...sources].map(packageOf).filter((p): p is string => p !== undefined));
    expect([...packages].filter((p) => HEAVY.includes(p))).toEqual([]);
    // Neither the TypeScript sources nor anything else of the checkout's outside dist/ and node_modules/.
    expect(loaded.filter((f) => f.startsWith(REPO_ROOT + sep) && !f.startsWith(dist + sep) && !f.includes(`${sep}node_modules${sep}`) && f !== EDGE_BIN)).toEqual([]);
  });
});
