import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeClient } from '../../operator/runtime/kube-client.js';
import { examplePath, helm, preparedChart } from '../harness/chart.js';
import { freshNamespace, sharedControlPlane } from '../harness/shared.js';

// `helm install` of the chart into the real apiserver: it succeeds, creates exactly the
// objects expected (the apiserver accepts every one: schema, immutable fields, RBAC
// objects), an upgrade keeps the generated peer token, and uninstall removes everything,
// cluster-scoped objects included. No kube-controller-manager or kubelet runs here, so
// the Deployment and DaemonSets never get pods: the objects are what is checked.

const RELEASE = 'edge-isolates';
const INSTANCE = `app.kubernetes.io/instance=${RELEASE}`;

interface Listed { items: { metadata: { name: string; namespace?: string }; data?: Record<string, string> }[] }

describe('helm install into the harness apiserver', () => {
  const { kubeConfig, kubeconfigPath, natsUrl } = sharedControlPlane();
  const kube = new KubeClient(kubeConfig);
  const chart = preparedChart();
  let ns: string;
  let values: string;

  /** Every object of the release: namespaced kinds in its namespace, and cluster-scoped ones. */
  async function releaseObjects(): Promise<string[]> {
    const paths: [string, string][] = [
      ['Deployment', `/apis/apps/v1/namespaces/${ns}/deployments`],
      ['DaemonSet', `/apis/apps/v1/namespaces/${ns}/daemonsets`],
      ['StatefulSet', `/apis/apps/v1/namespaces/${ns}/statefulsets`],
      ['Service', `/api/v1/namespaces/${ns}/services`],
      ['ServiceAccount', `/api/v1/namespaces/${ns}/serviceaccounts`],
      ['Secret', `/api/v1/namespaces/${ns}/secrets`],
      ['ConfigMap', `/api/v1/namespaces/${ns}/configmaps`],
      ['PodDisruptionBudget', `/apis/policy/v1/namespaces/${ns}/poddisruptionbudgets`],
      ['Role', `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/roles`],
      ['RoleBinding', `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings`],
      ['ClusterRole', '/apis/rbac.authorization.k8s.io/v1/clusterroles'],
      ['ClusterRoleBinding', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings'],
    ];
    const out: string[] = [];
    for (const [kind, path] of paths) {
      const list = await kube.request<Listed>('GET', path, { query: { labelSelector: INSTANCE } });
      out.push(...list.items.map((i) => `${kind}/${i.metadata.name}`));
    }
    return out.sort();
  }

  beforeAll(async () => {
    ns = await freshNamespace(kubeConfig, 'edge-system');
    // The three-region example, with the harness NATS as the external server and no
    // ServiceMonitor (the harness has no Prometheus Operator CRDs).
    values = join(chart.dir, 'test-values.yaml');
    writeFileSync(values, `nats: { enabled: false, url: "${natsUrl}" }\nmetrics: { serviceMonitor: { enabled: false } }\n`);
  });
  afterAll(() => chart.cleanup());

  it('installs and creates exactly the expected objects', async () => {
    const { stdout } = await helm(['install', RELEASE, chart.dir, '--namespace', ns, '--skip-crds', '-f', examplePath('three-regions'), '-f', values], kubeconfigPath);
    expect(stdout).toMatch(/STATUS: deployed/);
    expect(stdout).toContain('us-east: DaemonSet and Service edge-isolates-agent-us-east');
    const regions = ['ap-south', 'eu-west', 'us-east'];
    expect(await releaseObjects()).toEqual([
      'ClusterRole/edge-isolates-operator', 'ClusterRoleBinding/edge-isolates-operator',
      ...regions.map((r) => `DaemonSet/edge-isolates-agent-${r}`),
      'Deployment/edge-isolates-operator',
      'PodDisruptionBudget/edge-isolates-operator', ...regions.map((r) => `PodDisruptionBudget/edge-isolates-agent-${r}`),
      'Role/edge-isolates-operator-leader-election', 'RoleBinding/edge-isolates-operator-leader-election',
      'Role/edge-isolates-operator-model-servers', 'RoleBinding/edge-isolates-operator-model-servers',
      'Secret/edge-isolates-nats-auth', 'Secret/edge-isolates-peer-token', 'Secret/edge-isolates-sealing-key',
      ...regions.map((r) => `Service/edge-isolates-agent-${r}`), 'Service/edge-isolates-agent-metrics', 'Service/edge-isolates-operator-metrics',
      'ServiceAccount/edge-isolates-agent', 'ServiceAccount/edge-isolates-operator',
    ].sort());
    const svc = await kube.request<{ spec: { type: string; clusterIP: string } }>('GET', `/api/v1/namespaces/${ns}/services/edge-isolates-agent-metrics`);
    expect(svc.spec.clusterIP).toBe('None');
    const { stdout: list } = await helm(['list', '--namespace', ns, '-o', 'json'], kubeconfigPath);
    expect(JSON.parse(list)).toEqual([expect.objectContaining({ name: RELEASE, status: 'deployed' })]);
  });

  it('keeps the generated peer token, NATS passwords and sealing key on upgrade', async () => {
    const secretData = async (name: string) => (await kube.request<{ data: Record<string, string> }>('GET', `/api/v1/namespaces/${ns}/secrets/${name}`)).data;
    const token = async () => (await secretData('edge-isolates-peer-token')).token;
    const before = await token();
    expect(before).toBeTruthy();
    const nats = await secretData('edge-isolates-nats-auth');
    const sealing = await secretData('edge-isolates-sealing-key');
    expect(Object.keys(nats).sort()).toEqual(['agent', 'logs', 'operator']);
    const { stdout } = await helm(['upgrade', RELEASE, chart.dir, '--namespace', ns, '--skip-crds', '-f', examplePath('three-regions'), '-f', values, '--set', 'operator.concurrency=8'], kubeconfigPath);
    expect(stdout).toMatch(/REVISION: 2/);
    expect(await token()).toBe(before);
    expect(await secretData('edge-isolates-nats-auth')).toEqual(nats);
    expect(await secretData('edge-isolates-sealing-key')).toEqual(sealing);
    const dep = await kube.request<{ spec: { template: { spec: { containers: { args: string[] }[] } } } }>('GET', `/apis/apps/v1/namespaces/${ns}/deployments/edge-isolates-operator`);
    expect(dep.spec.template.spec.containers[0]!.args).toContain('--max-concurrent-reconciles=8');
  });

  it('refuses wrong values before touching the cluster', async () => {
    await expect(helm(['upgrade', RELEASE, chart.dir, '--namespace', ns, '--skip-crds', '-f', values, '--set', 'regions[0].name=Mars Base'], kubeconfigPath))
      .rejects.toThrow(/at '\/regions\/0\/name': 'Mars Base' does not match pattern/);
    const { stdout } = await helm(['history', RELEASE, '--namespace', ns, '-o', 'json'], kubeconfigPath);
    expect((JSON.parse(stdout) as unknown[]).length).toBe(2);
  });

  it('uninstalls everything it created, cluster-scoped objects included', async () => {
    await helm(['uninstall', RELEASE, '--namespace', ns, '--wait', '--timeout', '60s'], kubeconfigPath);
    expect(await releaseObjects()).toEqual([]);
  });
});
