import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { startControlPlane } from '../test/harness/control-plane.js';
import { installCrds } from '../test/harness/crds.js';
import { kubectl } from '../test/harness/kubectl.js';

// `edge dev`: the local system on loopback. Today that is the control plane (etcd,
// kube-apiserver, NATS with JetStream) with the CRDs installed and the example manifests
// applied; the operator and agents join it as they land.

export interface DevOptions { dir: string }

const say = (msg: string) => process.stderr.write(`[edge dev] ${msg}\n`);

export async function runDev(opts: DevOptions): Promise<number> {
  const dir = resolve(opts.dir);
  if (!existsSync(dir)) { say(`no such directory: ${dir}`); return 2; }
  say('starting etcd, kube-apiserver and nats-server (building them first if missing)...');
  const cp = await startControlPlane();
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    say('stopping...');
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
    process.stdout.write([
      '',
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
