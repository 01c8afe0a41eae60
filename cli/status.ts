import { parseArgs } from 'node:util';
import { KubeClient } from '../operator/runtime/kube-client.js';
import {
  actorReadiness, age, listCrs, resolveCluster, table, workerReadiness, type DurableActorObj, type EdgeWorkerObj,
} from './cluster-client.js';

// `edge status`: the EdgeWorkers and DurableActors of a cluster, with where they run and
// whether they are ready.

export const STATUS_USAGE = `usage: edge status [--namespace NS] [--kubeconfig FILE]

Lists EdgeWorkers (ready, regions with ready/desired agents, bundle digest) and
DurableActors (class, region, ready, active actors) in every namespace, or in NS.
Not-ready objects get a line saying why. The cluster: --kubeconfig, else $KUBECONFIG,
else the running \`edge dev\`, else ~/.kube/config.
`;

export async function runStatus(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { namespace: { type: 'string', short: 'n' }, kubeconfig: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    process.stderr.write(`edge status: ${(err as Error).message}\n\n${STATUS_USAGE}`);
    return 2;
  }
  if (values.help) { process.stdout.write(STATUS_USAGE); return 0; }
  let target;
  try { target = await resolveCluster(values.kubeconfig); } catch (err) {
    process.stderr.write(`edge status: ${(err as Error).message}\n`);
    return 1;
  }
  const kube = new KubeClient(target.kc);
  const [workers, actors] = await Promise.all([
    listCrs<EdgeWorkerObj>(kube, 'edgeworkers', values.namespace),
    listCrs<DurableActorObj>(kube, 'durableactors', values.namespace),
  ]);
  const byName = (a: { metadata: { namespace: string; name: string } }, b: typeof a) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`);
  const why: string[] = [];
  let out = '';
  if (workers.length === 0) out += 'no EdgeWorkers\n';
  else {
    const rows = [['NAMESPACE', 'WORKER', 'READY', 'REGIONS (ready/desired agents)', 'BUNDLE', 'AGE']];
    for (const w of workers.sort(byName)) {
      const r = workerReadiness(w);
      rows.push([w.metadata.namespace, w.metadata.name, r.ready ? 'True' : r.reason, r.where || '-', w.status?.bundleDigest?.slice(7, 19) ?? '-', age(w.metadata.creationTimestamp)]);
      if (!r.ready && r.message) why.push(`  worker ${w.metadata.namespace}/${w.metadata.name}: ${r.message}`);
    }
    out += table(rows);
  }
  out += '\n';
  if (actors.length === 0) out += 'no DurableActors\n';
  else {
    const rows = [['NAMESPACE', 'ACTOR', 'CLASS', 'WORKER', 'REGION', 'READY', 'ACTIVE', 'AGE']];
    for (const d of actors.sort(byName)) {
      const r = actorReadiness(d);
      rows.push([d.metadata.namespace, d.metadata.name, d.spec.className, d.spec.workerRef.name, r.where || '-', r.ready ? 'True' : r.reason, String(d.status?.activeActors ?? 0), age(d.metadata.creationTimestamp)]);
      if (!r.ready && r.message) why.push(`  actor ${d.metadata.namespace}/${d.metadata.name}: ${r.message}`);
    }
    out += table(rows);
  }
  if (why.length > 0) out += `\nnot ready:\n${why.join('\n')}\n`;
  process.stdout.write(out);
  return 0;
}
