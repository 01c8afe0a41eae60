import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request, type RequestOptions } from 'node:https';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { connect, type ConnectionOptions } from 'nats';
import { createLogger } from '../../common/log.js';
import {
  NATS_ROLES, NATS_USERS, natsAuthorization, natsClientOptions, type NatsCredentials, type NatsRole,
} from '../../common/nats-auth.js';
import { provisionNats } from '../../common/nats-provision.js';
import { ManagedProcess } from './process.js';
import { freePort, waitFor } from './ports.js';
import { toolPath } from './tools.js';

// A real control plane on loopback (for the tests and `edge dev`), the way
// controller-runtime's envtest starts one:
// etcd (TLS with client certificates: only the apiserver holds one), kube-apiserver (RBAC,
// secure port, token auth for an admin in system:masters, service-account keys made on the
// fly) and nats-server with JetStream and a user per role (common/nats-auth.ts; passwords
// in files beside the config, streams created at once as the admin). Every port is
// ephemeral, every file is under one temp dir, and stop() leaves nothing behind. Workers
// run untrusted code on the same loopback, so nothing here is open to a client without a
// credential (docs/security-nats.md).

const run = promisify(execFile);

export interface ControlPlane {
  /** Admin kubeconfig (system:masters), also written to `kubeconfigPath`. */
  kubeConfig: KubeConfig;
  kubeconfigPath: string;
  apiserverUrl: string;
  /** PEM of the CA that signed the apiserver's serving certificate. */
  caPem: string;
  /** The first server's URL; on a cluster, clients learn the others from it. */
  natsUrl: string;
  natsMonitorUrl: string;
  /** The nats-servers (one, or `natsServers` of a cluster), each restartable on its own store and ports. */
  nats: NatsNode[];
  /** Per role: the user and a file holding its password (mode 0600), for `--nats-user`/`--nats-password-file`. */
  natsCredentials: Record<NatsRole, NatsCredentials & { passwordFile: string }>;
  /** Connection options of a client of `role` (default admin: everything allowed), for tests and tools. */
  natsOptions(role?: NatsRole): Partial<ConnectionOptions>;
  /** 32 random bytes (hex) in a file: the key secret values are sealed with in NATS (common/sealing.ts). */
  sealingKeyFile: string;
  /** https: etcd wants a client certificate signed by `etcdTls.ca`. */
  etcdUrl: string;
  /** The etcd CA and the apiserver's client certificate for it. */
  etcdTls: { ca: string; cert: string; key: string };
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
  /**
   * nats-servers (default 1). 3 makes a JetStream cluster on loopback, the production
   * setting: every stream and bucket is created with 3 replicas.
   */
  natsServers?: number;
}

/** One nats-server of the control plane: kill it, start it again on the same ports and store. */
export interface NatsNode {
  name: string;
  url: string;
  monitorUrl: string;
  storeDir: string;
  /** The running process (undefined between kill9() and restart()). */
  readonly process: ManagedProcess | undefined;
  /** SIGKILL, resolving once it is gone: no shutdown, no flush. */
  kill9(): Promise<void>;
  /** Starts it again (stopping it first when it runs); resolves when it answers /healthz. */
  restart(): Promise<void>;
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

/**
 * etcd's own CA (not the apiserver's client CA: a certificate for etcd must not also be a
 * login to the apiserver), its serving and peer certificate, and the one client
 * certificate, the apiserver's.
 */
async function makeEtcdCerts(dir: string): Promise<{ ca: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string }> {
  const f = (n: string) => join(dir, n);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', ['req', '-x509', ...ec, '-keyout', f('etcd-ca.key'), '-out', f('etcd-ca.crt'), '-days', '30', '-subj', '/CN=edge-isolates-etcd-ca']);
  writeFileSync(f('etcd-server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  writeFileSync(f('etcd-client.ext'), 'extendedKeyUsage=clientAuth\n');
  const sign = async (name: string, cn: string) => {
    await run('openssl', ['req', ...ec, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${cn}`]);
    await run('openssl', ['x509', '-req', '-in', f(`${name}.csr`), '-CA', f('etcd-ca.crt'), '-CAkey', f('etcd-ca.key'), '-CAcreateserial',
      '-out', f(`${name}.crt`), '-days', '30', '-extfile', f(`${name}.ext`)]);
  };
  await sign('etcd-server', 'etcd');
  await sign('etcd-client', 'kube-apiserver-etcd-client');
  return { ca: f('etcd-ca.crt'), serverCert: f('etcd-server.crt'), serverKey: f('etcd-server.key'), clientCert: f('etcd-client.crt'), clientKey: f('etcd-client.key') };
}

/** GET url with TLS options answered 200 (within a second). */
export function httpsOk(url: string, tls: RequestOptions): Promise<boolean> {
  return new Promise((resolveOk) => {
    const req = request(url, { ...tls, timeout: 1000 }, (res) => { res.resume(); resolveOk(res.statusCode === 200); });
    req.on('error', () => resolveOk(false));
    req.on('timeout', () => { req.destroy(); resolveOk(false); });
    req.end();
  });
}

/** nats-server's config: loopback, JetStream in `storeDir`, one user per role. */
export function natsServerConfig(o: {
  port: number; monitorPort: number; storeDir: string; passwords: Record<NatsRole, string>; name?: string; maxPayload?: number;
  /** A member of a cluster: its route port, every member's route port, and the routes' own credential. */
  cluster?: { port: number; routes: number[]; user: string; pass: string };
}): string {
  const c = o.cluster;
  return [
    `listen: "127.0.0.1:${o.port}"`,
    `http: "127.0.0.1:${o.monitorPort}"`,
    `server_name: ${JSON.stringify(o.name ?? 'harness')}`,
    ...(o.maxPayload ? [`max_payload: ${o.maxPayload}`] : []),
    ...(c ? [`cluster: ${JSON.stringify({
      name: 'edge', listen: `127.0.0.1:${c.port}`,
      authorization: { user: c.user, password: c.pass },
      routes: c.routes.filter((r) => r !== c.port).map((r) => `nats-route://${c.user}:${c.pass}@127.0.0.1:${r}`),
    }, null, 2)}`] : []),
    `jetstream { store_dir: ${JSON.stringify(o.storeDir)} }`,
    // NATS config is a superset of JSON.
    `authorization: ${JSON.stringify(natsAuthorization(o.passwords), null, 2)}`,
    '',
  ].join('\n');
}

/** A random password per role, each also in `<dir>/nats-<role>.password` (0600). */
export function makeNatsCredentials(dir: string): Record<NatsRole, NatsCredentials & { passwordFile: string }> {
  const out = {} as Record<NatsRole, NatsCredentials & { passwordFile: string }>;
  for (const role of NATS_ROLES) {
    const pass = randomBytes(24).toString('hex');
    const passwordFile = join(dir, `nats-${role}.password`);
    writeFileSync(passwordFile, pass + '\n', { mode: 0o600 });
    out[role] = { user: NATS_USERS[role], pass, passwordFile };
  }
  return out;
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

/**
 * Starts `count` nats-servers (a JetStream cluster when more than one), each with a config
 * of its own under `dir` and kept in `processes` across restarts (so stop() takes down the
 * current one). `ready` resolves when all of them answer /healthz.
 */
async function natsNodes(
  bin: string, count: number, dir: string, creds: Record<NatsRole, { pass: string }>, processes: ManagedProcess[],
): Promise<(NatsNode & { ready: Promise<void> })[]> {
  const ports = await Promise.all(Array.from({ length: count * 3 }, () => freePort()));
  const routes = Array.from({ length: count }, (_, i) => ports[i * 3 + 2]!);
  const routeCred = { user: 'route', pass: randomBytes(24).toString('hex') };
  const passwords = Object.fromEntries(NATS_ROLES.map((r) => [r, creds[r].pass])) as Record<NatsRole, string>;
  return Array.from({ length: count }, (_, i) => {
    const [port, monitorPort] = [ports[i * 3]!, ports[i * 3 + 1]!];
    const name = count === 1 ? 'nats-server' : `nats-${i}`;
    const storeDir = join(dir, count === 1 ? 'nats' : `nats-${i}`);
    const conf = join(dir, `${name}.conf`);
    writeFileSync(conf, natsServerConfig({
      port, monitorPort, storeDir, passwords, name: count === 1 ? 'harness' : name,
      ...(count > 1 ? { cluster: { port: routes[i]!, routes, ...routeCred } } : {}),
    }), { mode: 0o600 });
    const monitorUrl = `http://127.0.0.1:${monitorPort}`;
    let proc: ManagedProcess | undefined;
    let starts = 0;
    const start = (): Promise<void> => {
      starts++;
      const p = new ManagedProcess(name, bin, ['-c', conf], { logFile: join(dir, starts === 1 ? `${name}.log` : `${name}.${starts}.log`) });
      const old = processes.indexOf(proc!);
      if (old >= 0) processes.splice(old, 1, p); else processes.push(p);
      proc = p;
      // A cluster member is healthy once JetStream has its meta leader and its streams are current.
      const health = count === 1 ? '/healthz?js-enabled-only=true' : '/healthz';
      return waitFor(`${name} (start ${starts}) ${health}`, async () => { p.assertRunning(); return httpOk(monitorUrl + health); }, 60_000, 100);
    };
    const kill9 = async () => {
      const p = proc;
      if (!p) return;
      p.killNow();
      await p.wait();
    };
    const ready = start();
    // Awaited after etcd is up; a failure before then must not be an unhandled rejection.
    ready.catch(() => {});
    return {
      name, url: `nats://127.0.0.1:${port}`, monitorUrl, storeDir,
      get process() { return proc?.running ? proc : undefined; },
      kill9,
      async restart() { if (proc?.running) await proc.stop(); await start(); },
      ready,
    };
  });
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
    const [etcdPort, etcdPeer, apiPort] = await Promise.all([freePort(), freePort(), freePort()]);

    const etcdTls = await makeEtcdCerts(dir);
    const etcdUrl = `https://127.0.0.1:${etcdPort}`;
    const etcdPeerUrl = `https://127.0.0.1:${etcdPeer}`;
    const etcd = new ManagedProcess('etcd', etcdBin, [
      '--name', 'harness', '--data-dir', join(dir, 'etcd'),
      '--listen-client-urls', etcdUrl, '--advertise-client-urls', etcdUrl,
      '--listen-peer-urls', etcdPeerUrl, '--initial-advertise-peer-urls', etcdPeerUrl,
      '--initial-cluster', `harness=${etcdPeerUrl}`,
      // Workers share this loopback: a client without a certificate from etcd's CA gets nothing.
      '--client-cert-auth', '--trusted-ca-file', etcdTls.ca, '--cert-file', etcdTls.serverCert, '--key-file', etcdTls.serverKey,
      '--peer-client-cert-auth', '--peer-trusted-ca-file', etcdTls.ca, '--peer-cert-file', etcdTls.serverCert, '--peer-key-file', etcdTls.serverKey,
      // Test data is thrown away: fsync only slows every apiserver write.
      '--unsafe-no-fsync', '--log-level', 'warn',
    ], { logFile: join(dir, 'etcd.log') });
    processes.push(etcd);
    const etcdClientTls = { ca: readFileSync(etcdTls.ca), cert: readFileSync(etcdTls.clientCert), key: readFileSync(etcdTls.clientKey) };

    const natsCredentials = makeNatsCredentials(dir);
    const sealingKeyFile = join(dir, 'sealing.key');
    writeFileSync(sealingKeyFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
    const natsCount = natsBin ? Math.max(1, opts.natsServers ?? 1) : 0;
    const nats = natsBin ? await natsNodes(natsBin, natsCount, dir, natsCredentials, processes) : [];

    // Certificates and keys while etcd starts.
    const { ca, cert, key } = await makeCerts(dir);
    const sa = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    writeFileSync(join(dir, 'sa.key'), sa.privateKey.export({ type: 'sec1', format: 'pem' }));
    writeFileSync(join(dir, 'sa.pub'), sa.publicKey.export({ type: 'spki', format: 'pem' }));
    const token = randomBytes(24).toString('hex');
    writeFileSync(join(dir, 'tokens.csv'), `${token},admin,admin-uid,"system:masters"\n`);

    await waitFor('etcd /health', async () => { etcd.assertRunning(); return httpsOk(`${etcdUrl}/health`, etcdClientTls); }, 20_000);

    const apiserverUrl = `https://127.0.0.1:${apiPort}`;
    const apiserver = new ManagedProcess('kube-apiserver', apiserverBin, [
      '--advertise-address=127.0.0.1', '--bind-address=127.0.0.1', `--secure-port=${apiPort}`,
      `--cert-dir=${join(dir, 'certs')}`, `--tls-cert-file=${cert}`, `--tls-private-key-file=${key}`,
      `--client-ca-file=${ca}`,
      `--etcd-servers=${etcdUrl}`, `--etcd-cafile=${etcdTls.ca}`, `--etcd-certfile=${etcdTls.clientCert}`, `--etcd-keyfile=${etcdTls.clientKey}`,
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
    const natsUrl = nats[0]?.url ?? '';
    const natsOptions = (role: NatsRole = 'admin'): Partial<ConnectionOptions> => ({
      servers: natsUrl, ...natsClientOptions({ role, credentials: natsCredentials[role] }),
    });
    if (nats.length) {
      await Promise.all(nats.map((n) => n.ready));
      // Agents may not create streams: they exist before any agent starts.
      const nc = await connect({ ...natsOptions('admin'), name: 'edge control plane' });
      const replicas = Math.min(3, natsCount);
      try {
        await provisionNats(nc, { log: createLogger({ component: 'control-plane' }, undefined, 'warn'), actorLogReplicas: replicas, kvReplicas: replicas });
      } finally { await nc.close(); }
    }

    const kubeconfigPath = join(dir, 'kubeconfig');
    writeFileSync(kubeconfigPath, kubeconfigYaml(apiserverUrl, caPem, token), { mode: 0o600 });
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);

    return {
      kubeConfig, kubeconfigPath, apiserverUrl, caPem,
      natsUrl,
      natsMonitorUrl: nats[0]?.monitorUrl ?? '',
      nats,
      natsCredentials, natsOptions, sealingKeyFile,
      etcdUrl, etcdTls: { ca: etcdTls.ca, cert: etcdTls.clientCert, key: etcdTls.clientKey },
      dir, processes, stop,
      startMs: Math.round(performance.now() - t0),
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
