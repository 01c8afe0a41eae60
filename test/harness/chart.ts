import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse, parseAllDocuments } from 'yaml';
import { REPO_ROOT, toolPath } from '../../cli/local/tools.js';

// The Helm chart in tests: helm (built from source by scripts/tools.sh), the chart made
// ready the way `helm dependency build` would, and its rendered objects.

const run = promisify(execFile);

export const CHART_DIR = join(REPO_ROOT, 'charts/edge-isolates');
export const EXAMPLES = ['one-region', 'three-regions', 'external-nats'] as const;
export const examplePath = (name: (typeof EXAMPLES)[number]) => join(CHART_DIR, 'examples', `${name}.yaml`);

export interface HelmResult { stdout: string; stderr: string }

/** Runs helm; rejects with helm's stderr in the message when it exits non-zero. */
export async function helm(args: string[], kubeconfigPath?: string): Promise<HelmResult> {
  const cache = join(REPO_ROOT, 'node_modules/.cache/helm');
  const env = {
    ...process.env,
    HELM_CACHE_HOME: join(cache, 'cache'), HELM_CONFIG_HOME: join(cache, 'config'), HELM_DATA_HOME: join(cache, 'data'),
    ...(kubeconfigPath ? { KUBECONFIG: kubeconfigPath } : {}),
  };
  try {
    const { stdout, stderr } = await run(toolPath('helm'), args, { env, maxBuffer: 64 * 1024 * 1024 });
    return { stdout, stderr };
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`helm ${args.join(' ')} failed: ${e.stderr || e.message}`);
  }
}

interface ChartYaml { dependencies?: { name: string; version: string; repository: string; condition?: string }[] }

export function chartYaml(dir = CHART_DIR): ChartYaml {
  return parse(readFileSync(join(dir, 'Chart.yaml'), 'utf8')) as ChartYaml;
}

/**
 * A copy of the chart with its dependencies present, as `helm dependency build` leaves it.
 * Helm refuses to template or install a chart whose Chart.yaml declares a dependency that is
 * missing from charts/, even a disabled one, and lint warns about it. charts/nats/ gets a
 * stand-in: a chart of that name and version with no templates, so these tests see only this
 * chart's objects. Tests render with nats.enabled=true only to check what this chart does
 * with it (the URL it points at); the stand-in renders nothing. The real NATS chart (vendored
 * in charts/nats) is installed by chart-readme.test.ts, through `helm dependency build`.
 */
export function preparedChart(): { dir: string; cleanup(): void } {
  const root = mkdtempSync(join(tmpdir(), 'edge-chart-'));
  const dir = join(root, 'edge-isolates');
  // Not charts/: a `helm dependency build` run in this checkout leaves the packaged NATS chart there.
  cpSync(CHART_DIR, dir, { recursive: true, filter: (src) => src !== join(CHART_DIR, 'charts') });
  for (const dep of chartYaml().dependencies ?? []) {
    const version = /\d+\.\d+\.\d+/.exec(dep.version)?.[0] ?? '0.0.0';
    mkdirSync(join(dir, 'charts', dep.name), { recursive: true });
    writeFileSync(join(dir, 'charts', dep.name, 'Chart.yaml'),
      `apiVersion: v2\nname: ${dep.name}\nversion: ${version}\ndescription: test stand-in for the ${dep.name} chart from ${dep.repository}\n`);
  }
  return { dir, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

/** The API a cluster with the Prometheus Operator has, for `apiVersions`. */
export const SERVICE_MONITOR_API = 'monitoring.coreos.com/v1/ServiceMonitor';

/**
 * `helm template` of the chart with these values files and --set flags, parsed. No
 * --kube-version: helm's own default must satisfy the chart's kubeVersion (scripts/tools.sh
 * builds it with the Kubernetes version ldflags of Helm's Makefile). `apiVersions`: what the
 * pretended cluster serves beyond the built-in kinds (--api-versions).
 */
export async function render(chartDir: string, opts: { values?: string[]; set?: string[]; namespace?: string; release?: string; includeCrds?: boolean; apiVersions?: string[] } = {}): Promise<K8sObject[]> {
  const args = ['template', opts.release ?? 'edge-isolates', chartDir, '--namespace', opts.namespace ?? 'edge-system'];
  for (const a of opts.apiVersions ?? []) args.push('--api-versions', a);
  for (const v of opts.values ?? []) args.push('-f', v);
  for (const s of opts.set ?? []) args.push('--set', s);
  if (opts.includeCrds) args.push('--include-crds');
  const { stdout } = await helm(args);
  return parseAllDocuments(stdout).map((d) => d.toJS() as K8sObject | null).filter((o): o is K8sObject => o !== null);
}

export interface Rule { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }

/**
 * The operator's permissions, one entry per (group, resource, verb[, name]): exactly the
 * calls in operator/*.ts. The chart's RBAC must grant these and nothing else.
 */
export const OPERATOR_CLUSTER_PERMISSIONS = [
  ...['edgeworkers', 'durableactors'].flatMap((r) => ['list', 'watch', 'patch'].map((v) => `edge.isolates.dev/${r}:${v}`)),
  'edge.isolates.dev/edgeworkers/status:patch', 'edge.isolates.dev/durableactors/status:patch',
  // The admin's policies and model catalogue: read only.
  ...['edgepolicies', 'edgemodels'].flatMap((r) => ['list', 'watch'].map((v) => `edge.isolates.dev/${r}:${v}`)),
  'core/nodes:list', 'core/nodes:watch',
  ...['get', 'list', 'watch'].map((v) => `core/configmaps:${v}`),
  // Bound Secrets are read by name; never listed or watched.
  'core/secrets:get',
  // A repeated Event patches the first one's count (operator/runtime/events.ts).
  'core/events:create', 'core/events:patch',
].sort();

/** In the model namespace only: the model servers' Deployments and Services. */
export const OPERATOR_MODEL_SERVER_PERMISSIONS = [
  ...['get', 'list', 'watch', 'create', 'update', 'delete'].map((v) => `apps/deployments:${v}`),
  ...['get', 'list', 'create', 'update', 'delete'].map((v) => `core/services:${v}`),
].sort();

/** Namespaced (leader election, in the release namespace) on top of the cluster-wide ones. */
export const operatorLeasePermissions = (leaseName: string) => [
  'coordination.k8s.io/leases:create',
  `coordination.k8s.io/leases:get:${leaseName}`,
  `coordination.k8s.io/leases:update:${leaseName}`,
].sort();

/** Rules flattened to `group/resource:verb[:name]` strings (core group as "core"). */
export function flattenRules(rules: Rule[]): string[] {
  const out = new Set<string>();
  for (const r of rules) {
    for (const g of r.apiGroups) {
      for (const res of r.resources) {
        for (const v of r.verbs) {
          const base = `${g === '' ? 'core' : g}/${res}:${v}`;
          if (r.resourceNames?.length) for (const n of r.resourceNames) out.add(`${base}:${n}`);
          else out.add(base);
        }
      }
    }
  }
  return [...out].sort();
}
