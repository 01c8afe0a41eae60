import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Condition } from '../common/api/index.js';
import { ConditionReasons as R, ConditionTypes, type ConditionReason, type ConditionType } from '../common/reasons.js';
import { crPath, type KubeClient, type KubeCredentials } from '../operator/runtime/kube-client.js';
import { kubeconfigFiles, loadKubeconfig } from './kubeconfig.js';

// What `edge deploy`, `edge status` and `edge logs` share: finding the cluster (flags,
// $KUBECONFIG, or the one `edge dev` is running, remembered in a small state file) and
// reading EdgeWorkers and DurableActors the way a person wants to see them.

/** What a running `edge dev` writes for the other commands ($EDGE_DEV_STATE overrides the path). */
export interface DevState {
  pid: number;
  startedAt: string;
  dir: string;
  kubeconfig: string;
  natsUrl: string;
  /** The `edge logs` user of that NATS and the file holding its password. */
  natsUser?: string;
  natsPasswordFile?: string;
  apiserverUrl: string;
  agents: { region: string; node: string; url: string; port: number; metrics: string }[];
  operatorMetrics: string;
}

export function devStatePath(): string {
  return process.env.EDGE_DEV_STATE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'edge-isolates', 'dev.json');
}

export function writeDevState(s: DevState): void {
  const p = devStatePath();
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(`${p}.tmp`, JSON.stringify(s, null, 2) + '\n', { mode: 0o600 });
  renameSync(`${p}.tmp`, p);
}

/** Removes the state file if it is this process's. */
export function clearDevState(pid = process.pid): void {
  const p = devStatePath();
  try {
    if ((JSON.parse(readFileSync(p, 'utf8')) as DevState).pid === pid) rmSync(p, { force: true });
  } catch { /* gone or unreadable */ }
}

const running = (pid: number) => {
  try { process.kill(pid, 0); return true; } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM'; }
};

/** The state of the `edge dev` that is running now, if any. */
export function readDevState(): DevState | undefined {
  try {
    const s = JSON.parse(readFileSync(devStatePath(), 'utf8')) as DevState;
    return running(s.pid) && existsSync(s.kubeconfig) ? s : undefined;
  } catch { return undefined; }
}

export interface ClusterTarget { kc: KubeCredentials; from: string; namespace: string; dev: DevState | undefined }

/** --kubeconfig, else $KUBECONFIG, else the running `edge dev`, else ~/.kube/config. */
export async function resolveCluster(flag: string | undefined): Promise<ClusterTarget> {
  const dev = readDevState();
  let file: string | undefined;
  let from: string;
  if (flag) { file = flag; from = flag; }
  else if (process.env.KUBECONFIG) from = `$KUBECONFIG (${process.env.KUBECONFIG})`;
  else if (dev) { file = dev.kubeconfig; from = `edge dev (${dev.kubeconfig})`; }
  else if (existsSync(join(homedir(), '.kube', 'config'))) from = '~/.kube/config';
  else throw new Error('no cluster: give --kubeconfig FILE, set $KUBECONFIG, or start `edge dev`');
  const devTarget = dev && (flag ?? process.env.KUBECONFIG ?? dev.kubeconfig) === dev.kubeconfig ? dev : undefined;
  const light = loadKubeconfig(kubeconfigFiles(file));
  if (light) return { kc: light.credentials, from, namespace: light.namespace, dev: devTarget };
  // An exec plugin, auth-provider, impersonation or proxy: client-node does those. It takes
  // about as long to load as the rest of the command, so only such kubeconfigs pay for it.
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  if (file) kc.loadFromFile(file); else kc.loadFromDefault();
  const ctx = kc.getContextObject(kc.getCurrentContext());
  return { kc, from, namespace: ctx?.namespace || 'default', dev: devTarget };
}

export interface CrMeta { name: string; namespace: string; uid?: string; generation: number; creationTimestamp?: string; resourceVersion?: string }
export interface EdgeWorkerObj {
  metadata: CrMeta;
  spec: { routes?: { host: string; pathPrefix?: string }[]; placement?: { regions?: string[] }; source: { inline?: string; configMapRef?: { name: string; key: string } } };
  status?: { observedGeneration?: number; bundleDigest?: string; conditions?: Condition[]; regions?: { name: string; desiredAgents: number; readyAgents: number }[] };
}
export interface DurableActorObj {
  metadata: CrMeta;
  spec: { workerRef: { name: string }; className: string; locationHint?: string };
  status?: { observedGeneration?: number; conditions?: Condition[]; region?: string; activeActors?: number };
}

export async function listCrs<T>(kube: KubeClient, plural: string, namespace?: string): Promise<T[]> {
  return (await kube.request<{ items: T[] }>('GET', crPath(plural, namespace))).items;
}

export const conditionOf = (o: { status?: { conditions?: Condition[] } }, type: ConditionType) => o.status?.conditions?.find((c) => c.type === type);

/** Reasons after which waiting longer does not help: the spec (or what it refers to) must change. */
export const TERMINAL_REASONS: ReadonlySet<string> = new Set<ConditionReason>([
  R.BundleInvalid, R.SourceNotFound, R.SecretNotFound, R.ActorNotFound, R.NoRegions, R.WorkerNotFound, R.WorkerNotInRegion, R.RegionUnavailable,
  // The cluster admin's policy refuses the spec.
  R.LimitExceeded, R.ModelNotAllowed, R.GpuQuotaExceeded, R.RouteConflict, R.RouteNotAllowed,
]);
/** Not an operator reason: what the CLI shows while the status is not about the current spec yet. */
export const PENDING = 'Pending';

export interface Readiness {
  /** The status is about the current spec (observedGeneration == generation). */
  current: boolean;
  ready: boolean;
  reason: string;
  message: string;
  /** "eu-west 1/1, us-east 0/1" (workers) or the region (actors). */
  where: string;
}

export function workerReadiness(ew: EdgeWorkerObj): Readiness {
  const r = conditionOf(ew, ConditionTypes.Ready);
  const current = ew.status?.observedGeneration === ew.metadata.generation;
  return {
    current,
    ready: current && r?.status === 'True',
    reason: current ? (r?.reason ?? PENDING) : PENDING,
    message: current ? (r?.message ?? '') : 'the operator has not seen this version yet',
    where: (ew.status?.regions ?? []).map((x) => `${x.name} ${x.readyAgents}/${x.desiredAgents}`).join(', '),
  };
}

export function actorReadiness(da: DurableActorObj): Readiness {
  const r = conditionOf(da, ConditionTypes.Ready);
  const current = da.status?.observedGeneration === da.metadata.generation;
  return {
    current,
    ready: current && r?.status === 'True',
    reason: current ? (r?.reason ?? PENDING) : PENDING,
    message: current ? (r?.message ?? '') : 'the operator has not seen this version yet',
    where: da.status?.region ?? da.spec.locationHint ?? '',
  };
}

/** A plain text table: columns padded to their widest cell. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => { widths[i] = Math.max(widths[i] ?? 0, c.length); });
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('   ').trimEnd()).join('\n') + '\n';
}

export function age(ts: string | undefined): string {
  if (!ts) return '';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172_800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}
