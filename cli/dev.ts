import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { createLogger } from '../common/log.js';
import { Agent } from '../node-agent/agent.js';
import { startAdminServer } from '../node-agent/admin-server.js';
import { DirectorySource } from '../node-agent/desired-state.js';
import { freePort } from '../test/harness/ports.js';
import { startControlPlane } from '../test/harness/control-plane.js';
import { installCrds } from '../test/harness/crds.js';
import { kubectl } from '../test/harness/kubectl.js';

// `edge dev`: the local system on loopback: the control plane (etcd, kube-apiserver,
// NATS with JetStream) with the CRDs installed and the manifests of DIR applied, and a
// node agent serving the EdgeWorkers of DIR straight from the directory (reloading on
// every edit). The operator and per-region agents fed over NATS replace that agent as
// they land.

export interface DevOptions { dir: string; port?: number }

/** `<host> <pathPrefix>` of every EdgeWorker route in DIR, for the banner. */
function routesIn(dir: string): string[] {
  const out: string[] = [];
  for (const f of readdirSync(dir).filter((n) => /\.ya?ml$/.test(n)).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, f), 'utf8'))) {
      const o = doc.toJSON() as { kind?: string; spec?: { routes?: { host: string; pathPrefix?: string }[] } } | null;
      if (o?.kind !== 'EdgeWorker') continue;
      for (const r of o.spec?.routes ?? []) out.push(`${r.host}${r.pathPrefix ?? '/'}`);
    }
  }
  return out;
}

/** 8787 like wrangler dev when it is free, else any free port. */
async function agentPort(wanted: number | undefined): Promise<number> {
  if (wanted !== undefined) return wanted;
  const { createServer } = await import('node:net');
  const free = await new Promise<boolean>((r) => {
    const s = createServer().once('error', () => r(false)).listen(8787, '127.0.0.1', () => s.close(() => r(true)));
  });
  return free ? 8787 : freePort();
}

const say = (msg: string) => process.stderr.write(`[edge dev] ${msg}\n`);

export async function runDev(opts: DevOptions): Promise<number> {
  const dir = resolve(opts.dir);
  if (!existsSync(dir)) { say(`no such directory: ${dir}`); return 2; }
  say('starting etcd, kube-apiserver and nats-server (building them first if missing)...');
  const cp = await startControlPlane();
  let agent: Agent | undefined;
  let adminClose: (() => void) | undefined;
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    say('stopping...');
    await agent?.stop();
    adminClose?.();
    await cp.stop();
    say('stopped; nothing left running');
  };
  try {
    say(`control plane ready in ${cp.startMs} ms`);
    await installCrds(cp.kubeConfig);
    say('CRDs installed');
    const applied = await kubectl(cp.kubeconfigPath, ['apply', '-n', 'default', '-f', dir]);
    if (applied.code !== 0) {
      say(`applying ${dir} failed:\n${applied.stderr}`);
      await stop();
      return 1;
    }
    process.stdout.write(applied.stdout);

    const log = createLogger({ component: 'agent' });
    agent = new Agent({ source: new DirectorySource(dir, log), log, metricLabels: { region: 'local' } });
    const admin = await startAdminServer(agent, await freePort());
    adminClose = () => admin.server.close();
    const port = await agent.start(await agentPort(opts.port));
    const routes = routesIn(dir).map((r) => {
      const [host, ...path] = r.split('/');
      return `  http://${host}:${port}/${path.join('/')}` + (host!.endsWith('.localhost') ? '' : `   (curl -H 'Host: ${host}' http://127.0.0.1:${port}/${path.join('/')})`);
    });
    process.stdout.write([
      '',
      'workers (edit a file in the directory and it reloads):',
      ...routes,
      '',
      `agent metrics   http://127.0.0.1:${admin.port}/metrics`,
      `agent status    http://127.0.0.1:${admin.port}/status`,
      `kube-apiserver  ${cp.apiserverUrl}`,
      `NATS            ${cp.natsUrl}`,
      `kubeconfig      ${cp.kubeconfigPath}`,
      '',
      'try:',
      `  export KUBECONFIG=${cp.kubeconfigPath}`,
      '  kubectl get edgeworkers,durableactors',
      '',
      'Ctrl-C stops everything.',
      '',
    ].join('\n'));
  } catch (err) {
    say(`failed: ${err instanceof Error ? err.message : String(err)}`);
    await stop();
    return 1;
  }
  await new Promise<void>((resolveStop) => {
    const onSignal = () => { void stop().then(resolveStop); };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
  return 0;
}
