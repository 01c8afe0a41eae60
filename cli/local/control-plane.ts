import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { ManagedProcess } from './process.js';
import { freePort, waitFor } from './ports.js';
import { toolPath } from './tools.js';

// A real control plane on loopback (for the tests and `edge dev`), the way
// controller-runtime's envtest starts one:
// etcd, kube-apiserver (RBAC, secure port, token auth for an admin in system:masters,
// service-account keys made on the fly) and nats-server with JetStream. Every port is
// ephemeral, every file is under one temp dir, and stop() leaves nothing behind.

const run = promisify(execFile);

export interface ControlPlane {
  /** Admin kubeconfig (system:masters), also written to `kubeconfigPath`. */
  kubeConfig: KubeConfig;
  kubeconfigPath: string;
  apiserverUrl: string;
  /** PEM of the CA that signed the apiserver's serving certificate. */
  caPem: string;
  natsUrl: string;
  natsMonitorUrl: string;
  etcdUrl: string;
  dir: string;
  /** Milliseconds from start to everything ready. */
  startMs: number;
  processes: ManagedProcess[];
  stop(): Promise<void>;
}

export interface ControlPlaneOptions {
  /** Keep the temp dir (logs, data) after stop; also when EDGE_KEEP_TMP=1. */
  keepDir?: boolean;
  /** Start nats-server too (default true). */
  nats?: boolean;
}

async function makeCerts(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const ca = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  const key = join(dir, 'apiserver.key');
  const csr = join(dir, 'apiserver.csr');
  const cert = join(dir, 'apiserver.crt');
  const ext = join(dir, 'apiserver.ext');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', ['req', '-x509', ...ec, '-keyout', caKey, '-out', ca, '-days', '30', '-subj', '/CN=edge-isolates-harness-ca']);
  await run('openssl', ['req', ...ec, '-keyout', key, '-out', csr, '-subj', '/CN=kube-apiserver']);
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n');
  await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-out', cert, '-days', '30', '-extfile', ext]);
  return { ca, cert, key };
}

/** GET url answered 200 (within a second). */
export function httpOk(url: string): Promise<boolean> {
  return new Promise((resolveOk) => {
    const req = httpRequest(url, { timeout: 1000 }, (res) => { res.resume(); resolveOk(res.statusCode === 200); });
    req.on('error', () => resolveOk(false));
    req.on('timeout', () => { req.destroy(); resolveOk(false); });
    req.end();
  });
}

function apiserverReady(url: string, token: string, ca: string): Promise<boolean> {
  return new Promise((resolveOk) => {
    const req = request(`${url}/readyz`, { ca, headers: { authorization: `Bearer ${token}` }, timeout: 1000 }, (res) => {
      res.resume(); resolveOk(res.statusCode === 200);
    });
    req.on('error', () => resolveOk(false));
    req.on('timeout', () => { req.destroy(); resolveOk(false); });
    req.end();
  });
}

export function kubeconfigYaml(server: string, caPem: string, token: string, user = 'admin'): string {
  const ca = Buffer.from(caPem).toString('base64');
  return `apiVersion: v1
kind: Config
clusters:
- name: edge-local
  cluster:
    server: ${server}
    certificate-authority-data: ${ca}
users:
- name: ${user}
  user:
    token: ${token}
contexts:
- name: edge-local
  context: {cluster: edge-local, user: ${user}, namespace: default}
current-context: edge-local
`;
}

export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const t0 = performance.now();
  const dir = mkdtempSync(join(tmpdir(), 'edge-cp-'));
  const processes: ManagedProcess[] = [];
  const keep = opts.keepDir ?? process.env.EDGE_KEEP_TMP === '1';
  const stop = async () => {
    // The apiserver first: stopped after etcd it would wait on its storage until killed.
    const apiserver = processes.filter((p) => p.name === 'kube-apiserver');
    await Promise.all(apiserver.map((p) => p.stop()));
    await Promise.all(processes.filter((p) => !apiserver.includes(p)).map((p) => p.stop()));
    if (!keep) rmSync(dir, { recursive: true, force: true });
  };
  try {
    const [etcdBin, apiserverBin] = [toolPath('etcd'), toolPath('kube-apiserver')];
    const natsBin = opts.nats === false ? undefined : toolPath('nats-server');
    const [etcdPort, etcdPeer, apiPort, natsPort, natsMon] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);

    const etcdUrl = `http://127.0.0.1:${etcdPort}`;
    const etcd = new ManagedProcess('etcd', etcdBin, [
      '--name', 'harness', '--data-dir', join(dir, 'etcd'),
      '--listen-client-urls', etcdUrl, '--advertise-client-urls', etcdUrl,
      '--listen-peer-urls', `http://127.0.0.1:${etcdPeer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${etcdPeer}`,
      '--initial-cluster', `harness=http://127.0.0.1:${etcdPeer}`,
      // Test data is thrown away: fsync only slows every apiserver write.
      '--unsafe-no-fsync', '--log-level', 'warn',
    ], { logFile: join(dir, 'etcd.log') });
    processes.push(etcd);

    let nats: ManagedProcess | undefined;
    if (natsBin) {
      nats = new ManagedProcess('nats-server', natsBin, [
        '-a', '127.0.0.1', '-p', String(natsPort), '-m', String(natsMon),
        '-js', '-sd', join(dir, 'nats'), '-n', 'harness',
      ], { logFile: join(dir, 'nats.log') });
      processes.push(nats);
    }

    // Certificates and keys while etcd starts.
    const { ca, cert, key } = await makeCerts(dir);
    const sa = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    writeFileSync(join(dir, 'sa.key'), sa.privateKey.export({ type: 'sec1', format: 'pem' }));
    writeFileSync(join(dir, 'sa.pub'), sa.publicKey.export({ type: 'spki', format: 'pem' }));
    const token = randomBytes(24).toString('hex');
    writeFileSync(join(dir, 'tokens.csv'), `${token},admin,admin-uid,"system:masters"\n`);

    await waitFor('etcd /health', async () => { etcd.assertRunning(); return httpOk(`${etcdUrl}/health`); }, 20_000);

    const apiserverUrl = `https://127.0.0.1:${apiPort}`;
    const apiserver = new ManagedProcess('kube-apiserver', apiserverBin, [
      '--advertise-address=127.0.0.1', '--bind-address=127.0.0.1', `--secure-port=${apiPort}`,
      `--cert-dir=${join(dir, 'certs')}`, `--tls-cert-file=${cert}`, `--tls-private-key-file=${key}`,
      `--client-ca-file=${ca}`,
      `--etcd-servers=${etcdUrl}`,
      '--service-cluster-ip-range=10.0.0.0/24',
      `--service-account-issuer=${apiserverUrl}`,
      `--service-account-key-file=${join(dir, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
      '--authorization-mode=RBAC',
      `--token-auth-file=${join(dir, 'tokens.csv')}`,
      '--allow-privileged=true',
      // No controller-manager runs here to create the per-namespace "default" ServiceAccount.
      '--disable-admission-plugins=ServiceAccount',
      '--enable-priority-and-fairness=false',
      '--v=0',
    ], { logFile: join(dir, 'kube-apiserver.log') });
    processes.push(apiserver);

    const caPem = readFileSync(ca, 'utf8');
    await waitFor('kube-apiserver /readyz', async () => {
      apiserver.assertRunning();
      return apiserverReady(apiserverUrl, token, caPem);
    }, 60_000, 100);
    if (nats) {
      await waitFor('nats-server /healthz', async () => { nats.assertRunning(); return httpOk(`http://127.0.0.1:${natsMon}/healthz?js-enabled-only=true`); }, 20_000);
    }

    const kubeconfigPath = join(dir, 'kubeconfig');
    writeFileSync(kubeconfigPath, kubeconfigYaml(apiserverUrl, caPem, token), { mode: 0o600 });
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);

    return {
      kubeConfig, kubeconfigPath, apiserverUrl, caPem,
      natsUrl: nats ? `nats://127.0.0.1:${natsPort}` : '',
      natsMonitorUrl: nats ? `http://127.0.0.1:${natsMon}` : '',
      etcdUrl, dir, processes, stop,
      startMs: Math.round(performance.now() - t0),
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
