import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_INLINE_SOURCE_BYTES } from '../../common/api/index.js';
import { crPath, KubeClient } from '../../operator/runtime/kube-client.js';
import { LocalCluster, QUICK_FAILOVER } from '../../cli/local/cluster.js';
import { get } from '../harness/http.js';
import { REPO_ROOT } from '../../cli/local/tools.js';

// `edge deploy`, `edge status` and `edge logs` against a real control plane with the
// operator and an agent (one region), as a user runs them: files on disk, the binary.

const NS = 'deploy';
const EDGE = join(REPO_ROOT, 'bin/edge.mjs');

interface Run { code: number; stdout: string; stderr: string }

describe('edge deploy', () => {
  let cluster: LocalCluster;
  let kube: KubeClient;
  const work = mkdtempSync(join(tmpdir(), 'edge-deploy-test-'));
  const file = (name: string, text: string) => { const p = join(work, name); mkdirSync(join(p, '..'), { recursive: true }); writeFileSync(p, text); return p; };
  const env = { ...process.env, EDGE_DEV_STATE: join(work, 'no-dev.json'), KUBECONFIG: '', EDGE_NATS_URL: '' };
  const edge = (args: string[]) => new Promise<Run>((resolveRun) => {
    execFile(process.execPath, ['--no-node-snapshot', EDGE, ...args], { env, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolveRun({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
  const deploy = (args: string[]) => edge(['deploy', ...args, '--namespace', NS, '--kubeconfig', cluster.cp.kubeconfigPath]);
  const agent = () => cluster.agent('eu-west');
  type EW = { metadata: { uid: string; generation: number }; spec: { source: { inline?: string; configMapRef?: { name: string; key: string } } } };

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

  it('bundles a file and the module it imports, creates the worker and waits until it serves', async () => {
    file('greeter/lib/greet.js', 'export const greet = (who) => `hello, ${who}`;\n');
    const entry = file('greeter/index.js', `import { greet } from './lib/greet.js';
export default {
  async fetch(request, env) {
    const path = new URL(request.url).pathname;
    console.log('greeting', path);
    return new Response(greet(env.WHO) + ' at ' + path);
  },
};
`);
    const r = await deploy([entry, '--name', 'greeter', '--var', 'WHO=world', '--route', 'greeter.test']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/created EdgeWorker deploy\/greeter \(generation 1\)/);
    expect(r.stdout).toMatch(/^ {2}eu-west 1\/1 {2}Ready$/m);
    expect(r.stdout).toMatch(/greeter is Ready/);
    expect(await get(agent(), 'greeter.test', '/a')).toEqual({ status: 200, text: 'hello, world at /a' });
    const ew = await kube.request<EW>('GET', crPath('edgeworkers', NS, 'greeter'));
    expect(ew.spec.source.inline).toContain('hello, ${who}');
    expect(ew.spec.source.inline).not.toMatch(/^import /m);
  });

  it('rolls out an update, and `edge logs` shows the console output', async () => {
    file('greeter/lib/greet.js', 'export const greet = (who) => `bonjour, ${who}`;\n');
    const r = await deploy([join(work, 'greeter/index.js'), '--name', 'greeter', '--var', 'WHO=world', '--route', 'greeter.test']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/applied EdgeWorker deploy\/greeter \(generation 2\)/);
    expect(await get(agent(), 'greeter.test', '/b')).toEqual({ status: 200, text: 'bonjour, world at /b' });
    let logs: Run | undefined;
    for (let i = 0; i < 20; i++) {
      logs = await edge(['logs', 'greeter', '--namespace', NS, '--nats', cluster.cp.natsUrl, '--nats-user', cluster.cp.natsCredentials.logs.user, '--nats-password-file', cluster.cp.natsCredentials.logs.passwordFile]);
      if (/greeting \/b/.test(logs.stdout)) break;
      await new Promise((res) => setTimeout(res, 500));
    }
    expect(logs!.code).toBe(0);
    expect(logs!.stdout).toMatch(/^\S+Z eu-west\/isolate-eu-west log\s+greeting \/a$/m);
    expect(logs!.stdout).toMatch(/^\S+Z eu-west\/isolate-eu-west log\s+greeting \/b$/m);
  });

  it('puts a bundle over the inline limit in a ConfigMap owned by the worker, and back inline when it shrinks', async () => {
    const blob = 'x'.repeat(MAX_INLINE_SOURCE_BYTES + 20_000);
    file('big/data.js', `export const BLOB = ${JSON.stringify(blob)};\n`);
    const entry = file('big/index.js', `import { BLOB } from './data.js';\nexport default { fetch() { return new Response('blob of ' + BLOB.length); } };\n`);
    const r = await deploy([entry, '--name', 'big', '--route', 'big.test']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`stored gzip-compressed, \\d+ bytes, in ConfigMap ${NS}/big-bundle`));
    expect(await get(agent(), 'big.test')).toEqual({ status: 200, text: `blob of ${blob.length}` });
    const ew = await kube.request<EW>('GET', crPath('edgeworkers', NS, 'big'));
    expect(ew.spec.source).toEqual({ configMapRef: { name: 'big-bundle', key: 'worker.js.gz' } });
    const cm = await cluster.kubeConfig.makeApiClient(CoreV1Api).readNamespacedConfigMap({ namespace: NS, name: 'big-bundle' });
    expect(gunzipSync(Buffer.from(cm.binaryData!['worker.js.gz']!, 'base64')).toString()).toContain(blob);
    expect(cm.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'EdgeWorker', name: 'big', uid: ew.metadata.uid });

    file('big/data.js', 'export const BLOB = "small";\n');
    const again = await deploy([entry, '--name', 'big', '--route', 'big.test']);
    expect(again.code).toBe(0);
    expect(await get(agent(), 'big.test')).toEqual({ status: 200, text: 'blob of 5' });
    expect((await kube.request<EW>('GET', crPath('edgeworkers', NS, 'big'))).spec.source.inline).toContain('"small"');
    await expect(cluster.kubeConfig.makeApiClient(CoreV1Api).readNamespacedConfigMap({ namespace: NS, name: 'big-bundle' })).rejects.toThrow();
  });

  it('prints the BundleInvalid message and exits non-zero for a syntax error; the last good version keeps serving', async () => {
    const broken = file('broken.js', 'export default { fetch() { return new Response("x") }\n');
    // esbuild finds it first: nothing reaches the cluster.
    const local = await deploy([broken, '--name', 'broken']);
    expect(local.code).toBe(1);
    expect(local.stderr).toContain('Expected "}" but found end of file');
    expect(local.stderr).toContain('nothing was deployed');
    await expect(kube.request('GET', crPath('edgeworkers', NS, 'broken'))).rejects.toThrow(/404/);
    // Unbundled, the operator's compile check refuses it.
    const r = await deploy([broken, '--name', 'greeter', '--route', 'greeter.test', '--no-bundle']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/edge deploy: deploy\/greeter is not Ready: BundleInvalid: bundle sha256:[0-9a-f]{12}… does not compile: Unexpected end of input/);
    expect(await get(agent(), 'greeter.test', '/c')).toEqual({ status: 200, text: 'bonjour, world at /c' });
    // A bundle that compiles but does not load on the agents (a top-level throw) is refused too.
    const throws = file('throws.js', 'throw new Error("boom at load");\nexport default { fetch() { return new Response("never") } };\n');
    const t = await deploy([throws, '--name', 'throws', '--route', 'throws.test']);
    expect(t.code).toBe(1);
    expect(t.stderr).toMatch(/throws is not Ready: BundleInvalid: .*boom at load/);
  });

  it('`edge status` lists the workers with their regions and readiness', async () => {
    const r = await edge(['status', '--kubeconfig', cluster.cp.kubeconfigPath, '--namespace', NS]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^NAMESPACE\s+WORKER\s+READY\s+REGIONS/m);
    expect(r.stdout).toMatch(/^deploy\s+big\s+True\s+eu-west 1\/1\s+[0-9a-f]{12}/m);
    expect(r.stdout).toMatch(/^deploy\s+greeter\s+BundleInvalid\s+eu-west/m);
    expect(r.stdout).toMatch(/^ {2}worker deploy\/greeter: bundle sha256:.* does not compile/m);
    expect(r.stdout).toContain('no DurableActors');
  });

  it('--dry-run prints the EdgeWorker it would apply and touches nothing', async () => {
    const r = await deploy([join(work, 'greeter/index.js'), '--name', 'dry', '--regions', 'eu-west,us-east', '--dry-run']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^kind: EdgeWorker$/m);
    expect(r.stdout).toMatch(/regions:\n\s+- eu-west\n\s+- us-east/);
    await expect(kube.request('GET', crPath('edgeworkers', NS, 'dry'))).rejects.toThrow(/404/);
  });
});
