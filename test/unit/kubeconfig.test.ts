import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RequestOptions } from 'node:https';
import { afterAll, describe, expect, it } from 'vitest';
import { loadKubeconfig } from '../../cli/kubeconfig.js';

// cli/kubeconfig.ts: the light kubeconfig loader of `edge status`, `deploy` and `secret`
// (client-node only for what it does not do). kubectl's rules: files merged first-wins,
// paths relative to the file holding them. (Against a real apiserver: cli-startup.test.ts.)

describe('loadKubeconfig', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-kubeconfig-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string) => { const p = join(dir, name); mkdirSync(join(p, '..'), { recursive: true }); writeFileSync(p, text); return p; };
  const applied = async (files: string[]) => {
    const k = loadKubeconfig(files);
    if (!k) throw new Error('fell back to client-node');
    const opts: RequestOptions = {};
    await k.credentials.applyToHTTPSOptions(opts);
    return { k, opts, server: k.credentials.getCurrentCluster()?.server };
  };

  it('reads a token user and a CA file relative to the kubeconfig, and the context namespace', async () => {
    file('a/ca.pem', 'CA PEM');
    const a = file('a/config', `apiVersion: v1
clusters: [{ name: c, cluster: { server: "https://127.0.0.1:6443", certificate-authority: ca.pem } }]
users: [{ name: u, user: { token: secret-token } }]
contexts: [{ name: x, context: { cluster: c, user: u, namespace: shop } }]
current-context: x
`);
    const { k, opts, server } = await applied([a]);
    expect(server).toBe('https://127.0.0.1:6443');
    expect(k.namespace).toBe('shop');
    expect(opts.ca?.toString()).toBe('CA PEM');
    expect(opts.headers).toEqual({ Authorization: 'Bearer secret-token' });
  });

  it('reads client certificates from data, skips TLS verification when told, and defaults the namespace', async () => {
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const c = file('c/config', `clusters: [{ name: c, cluster: { server: "https://k:443", insecure-skip-tls-verify: true } }]
users: [{ name: u, user: { client-certificate-data: ${b64('CERT')}, client-key-data: ${b64('KEY')} } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
current-context: x
`);
    const { k, opts } = await applied([c]);
    expect(k.namespace).toBe('default');
    expect([opts.cert?.toString(), opts.key?.toString(), opts.rejectUnauthorized]).toEqual(['CERT', 'KEY', false]);
  });

  it('reads a token file on every request (it may be rotated)', async () => {
    const tokenFile = file('t/token', 'one\n');
    const t = file('t/config', `clusters: [{ name: c, cluster: { server: "https://k" } }]
users: [{ name: u, user: { tokenFile: token } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
current-context: x
`);
    const { k, opts } = await applied([t]);
    expect(opts.headers).toEqual({ Authorization: 'Bearer one' });
    writeFileSync(tokenFile, 'two');
    const again: RequestOptions = {};
    await k.credentials.applyToHTTPSOptions(again);
    expect(again.headers).toEqual({ Authorization: 'Bearer two' });
  });

  it('merges several files as kubectl does: the first to set a name or current-context wins, missing files skipped', async () => {
    const first = file('m/1', `current-context: x
clusters: [{ name: c, cluster: { server: "https://first" } }]
`);
    const second = file('m/2', `current-context: y
clusters: [{ name: c, cluster: { server: "https://second" } }]
users: [{ name: u, user: { username: admin, password: pw } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
`);
    const { server, opts } = await applied([join(dir, 'm/missing'), first, second]);
    expect(server).toBe('https://first');
    expect(opts.headers).toEqual({ Authorization: `Basic ${Buffer.from('admin:pw').toString('base64')}` });
  });

  it('leaves exec plugins, auth-providers and proxies to client-node', () => {
    for (const [cluster, user] of [
      ['{ server: "https://k" }', '{ exec: { command: aws, apiVersion: client.authentication.k8s.io/v1 } }'],
      ['{ server: "https://k" }', '{ auth-provider: { name: oidc } }'],
      ['{ server: "https://k", proxy-url: "http://proxy:3128" }', '{ token: t }'],
    ] as const) {
      const f = file('x/config', `clusters: [{ name: c, cluster: ${cluster} }]\nusers: [{ name: u, user: ${user} }]\ncontexts: [{ name: x, context: { cluster: c, user: u } }]\ncurrent-context: x\n`);
      expect(loadKubeconfig([f])).toBeUndefined();
    }
  });

  it('says what is missing', () => {
    expect(() => loadKubeconfig([file('e/1', 'clusters: []\n')])).toThrow(/no current-context/);
    expect(() => loadKubeconfig([file('e/2', 'current-context: nope\n')])).toThrow(/context "nope" is not in/);
    expect(() => loadKubeconfig([join(dir, 'e/absent')])).toThrow(/ENOENT/);
  });
});
