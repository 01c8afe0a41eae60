import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { X509Certificate } from 'node:crypto';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { parseOperatorFlags } from '../../cli/operator.js';
import { natsPermissions, NATS_USERS } from '../../common/nats-auth.js';
import {
  CHART_DIR, EXAMPLES, OPERATOR_CLUSTER_PERMISSIONS, OPERATOR_MODEL_SERVER_PERMISSIONS, chartYaml, examplePath, flattenRules, helm, operatorLeasePermissions,
  preparedChart, render, SERVICE_MONITOR_API, type K8sObject, type Rule,
} from '../harness/chart.js';

// The chart without a cluster: helm lint, helm template of the three example values files,
// the values schema refusing wrong values with a message, and the security settings of
// every pod. (Installing it, and running the operator with its RBAC: chart-install and
// chart-rbac.test.ts.)

interface Container {
  name: string; args?: string[]; image: string;
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  securityContext?: Record<string, unknown>; resources?: Record<string, unknown>; volumeMounts?: { name: string; mountPath: string }[];
}
interface PodSpec {
  containers: Container[]; securityContext?: Record<string, unknown>; automountServiceAccountToken?: boolean; serviceAccountName?: string;
  nodeSelector?: Record<string, string>; tolerations?: Record<string, unknown>[];
  volumes?: { name: string; emptyDir?: unknown; secret?: { secretName: string; items?: { key: string; path: string }[] } }[];
}
type Workload = K8sObject & { spec: { replicas?: number; template: { metadata: { labels: Record<string, string> }; spec: PodSpec } } };

const names = (objs: K8sObject[]) => objs.map((o) => `${o.kind}/${o.metadata.name}`).sort();
const byKind = <T extends K8sObject = K8sObject>(objs: K8sObject[], kind: string) => objs.filter((o) => o.kind === kind) as T[];
const one = <T extends K8sObject = K8sObject>(objs: K8sObject[], kind: string, name: string): T => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind}/${name} in ${names(objs).join(', ')}`);
  return o as T;
};
const arg = (c: Container, flag: string) => c.args?.find((a) => a.startsWith(`--${flag}=`))?.slice(flag.length + 3);

/** Objects every install has, whatever the regions. */
const BASE = [
  'ClusterRole/edge-isolates-operator', 'ClusterRoleBinding/edge-isolates-operator',
  'Deployment/edge-isolates-operator', 'NetworkPolicy/edge-isolates-operator', 'PodDisruptionBudget/edge-isolates-operator',
  'Role/edge-isolates-operator-leader-election', 'RoleBinding/edge-isolates-operator-leader-election',
  'Role/edge-isolates-operator-model-servers', 'RoleBinding/edge-isolates-operator-model-servers',
  'EdgePolicy/edge-isolates-default',
  'Service/edge-isolates-operator-metrics', 'ServiceAccount/edge-isolates-agent', 'ServiceAccount/edge-isolates-operator',
  'Secret/edge-isolates-nats-auth', 'Secret/edge-isolates-sealing-key',
];
const perRegion = (r: string) => [`DaemonSet/edge-isolates-agent-${r}`, `PodDisruptionBudget/edge-isolates-agent-${r}`, `Service/edge-isolates-agent-${r}`];
/** With agents, and with the NATS chart. */
const AGENT_POLICY = 'NetworkPolicy/edge-isolates-agent';
const NATS_POLICY = 'NetworkPolicy/edge-isolates-nats';

/** What every pod of the chart must have: non-root, read-only root, no capabilities, seccomp. */
function expectRestricted(w: Workload): void {
  const pod = w.spec.template.spec;
  expect(pod.securityContext, `${w.kind}/${w.metadata.name} pod securityContext`).toMatchObject({
    runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, seccompProfile: { type: 'RuntimeDefault' },
  });
  for (const c of pod.containers) {
    expect(c.securityContext, `${w.metadata.name}/${c.name}`).toEqual({
      allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true,
      capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' },
    });
    // Read-only root: /tmp (os.tmpdir()) is an emptyDir.
    expect(c.volumeMounts).toContainEqual({ name: 'tmp', mountPath: '/tmp' });
    expect(c.resources).toHaveProperty('requests');
  }
  expect(pod.volumes).toContainEqual(expect.objectContaining({ name: 'tmp', emptyDir: expect.anything() as unknown }));
}

describe('the Helm chart, rendered', () => {
  const chart = preparedChart();
  afterAll(() => chart.cleanup());

  it('declares the official NATS chart as a conditional dependency, vendored and pinned by Chart.lock', () => {
    const vendored = parse(readFileSync(join(REPO_ROOT, 'charts/nats/Chart.yaml'), 'utf8')) as { name: string; version: string };
    expect(vendored.name).toBe('nats');
    expect(chartYaml().dependencies).toEqual([
      { name: 'nats', version: vendored.version, repository: 'file://../nats', condition: 'nats.enabled' },
    ]);
    const lock = parse(readFileSync(join(CHART_DIR, 'Chart.lock'), 'utf8')) as { dependencies: unknown[] };
    expect(lock.dependencies).toEqual([{ name: 'nats', repository: 'file://../nats', version: vendored.version }]);
  });

  it('lints with no warnings, with its defaults and with each example', async () => {
    for (const values of [[], ...EXAMPLES.map((e) => [examplePath(e)])]) {
      const { stdout } = await helm(['lint', '--strict', chart.dir, ...values.flatMap((v) => ['-f', v])]);
      expect(stdout, values.join(' ') || 'defaults').toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
      expect(stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
    }
  });

  it('lints from the repository with only the dependency to build missing (what `helm dependency build` fixes)', async () => {
    // A copy as committed: a checkout where the README's `helm dependency build` ran has charts/*.tgz.
    const dir = join(mkdtempSync(join(tmpdir(), 'edge-chart-lint-')), 'edge-isolates');
    cpSync(CHART_DIR, dir, { recursive: true, filter: (src) => src !== join(CHART_DIR, 'charts') });
    const { stdout } = await helm(['lint', dir]).finally(() => rmSync(join(dir, '..'), { recursive: true, force: true }));
    expect(stdout.match(/\[(WARNING|ERROR)\].*/g)).toEqual([
      expect.stringMatching(/^\[WARNING\] .*: chart directory is missing these dependencies: nats$/) as unknown,
    ]);
  });

  it('one region: the operator, one agent DaemonSet and Service, NATS from the NATS chart', async () => {
    const objs = await render(chart.dir, { values: [examplePath('one-region')] });
    expect(names(objs)).toEqual([
      ...BASE, ...perRegion('eu-west'), 'Secret/edge-isolates-peer-token', 'Secret/edge-isolates-nats-tls', 'Service/edge-isolates-agent-metrics', AGENT_POLICY, NATS_POLICY,
    ].sort());
    for (const o of objs) {
      if (!['ClusterRole', 'ClusterRoleBinding', 'EdgePolicy', 'EdgeModel'].includes(o.kind)) expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe('edge-system');
      expect(o.metadata.labels).toMatchObject({ 'app.kubernetes.io/instance': 'edge-isolates', 'app.kubernetes.io/managed-by': 'Helm' });
    }
    const op = one<Workload>(objs, 'Deployment', 'edge-isolates-operator');
    expect(op.spec.replicas).toBe(2);
    const c = op.spec.template.spec.containers[0]!;
    expect(c.image).toBe('edge-isolates/operator:0.1.0');
    expect(arg(c, 'nats')).toBe('tls://edge-isolates-nats.edge-system.svc.cluster.local:4222');
    expect(arg(c, 'identity')).toBe('$(POD_NAME)');
    expect(arg(c, 'leader-elect-resource-namespace')).toBe('$(POD_NAMESPACE)');
    expect(arg(c, 'leader-elect-resource-name')).toBe('edge-isolates-operator');
    // controller-runtime's names, one port for metrics and probes, durations as Go writes them.
    expect(arg(c, 'metrics-bind-address')).toBe(':9091');
    expect(arg(c, 'health-probe-bind-address')).toBe(':9091');
    expect(c.args).toContain('--leader-elect');
    expect(arg(c, 'leader-elect-lease-duration')).toBe('15000ms');
    // The operator's own parser takes every flag the chart passes, and reads them as meant.
    const flags = parseOperatorFlags(c.args!.slice(1));
    expect(flags).toMatchObject({
      leaderElection: true, leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000, concurrency: 4, resyncMs: 300_000,
      listen: [{ host: '0.0.0.0', port: 9091 }], leaseName: 'edge-isolates-operator', leaseNamespace: '$(POD_NAMESPACE)',
    });
    expect(op.spec.template.spec.serviceAccountName).toBe('edge-isolates-operator');
    expect(op.spec.template.spec.automountServiceAccountToken).toBe(true);

    const ds = one<Workload>(objs, 'DaemonSet', 'edge-isolates-agent-eu-west');
    const pod = ds.spec.template.spec;
    expect(pod.nodeSelector).toEqual({ 'topology.kubernetes.io/region': 'eu-west', 'edge.isolates.dev/pool': 'isolate' });
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.serviceAccountName).toBe('edge-isolates-agent');
    const a = pod.containers[0]!;
    expect(a.image).toBe('edge-isolates/agent:0.1.0');
    expect(a.args?.[0]).toBe('agent');
    expect(Object.fromEntries(['nats', 'region', 'node', 'listen', 'admin', 'peer-listen', 'peer-advertise', 'advertise'].map((f) => [f, arg(a, f)]))).toEqual({
      nats: 'tls://edge-isolates-nats.edge-system.svc.cluster.local:4222', region: 'eu-west', node: '$(NODE_NAME)',
      listen: '0.0.0.0:8080', admin: '0.0.0.0:9090', 'peer-listen': '0.0.0.0:8081',
      'peer-advertise': 'http://$(POD_IP):8081', advertise: 'http://$(POD_IP):8080',
    });
    expect(a.env?.find((e) => e.name === 'EDGE_PEER_TOKEN')?.valueFrom?.secretKeyRef).toEqual({ name: 'edge-isolates-peer-token', key: 'token' });
    const secret = one<K8sObject & { data: Record<string, string> }>(objs, 'Secret', 'edge-isolates-peer-token');
    expect(Buffer.from(secret.data.token!, 'base64').toString()).toMatch(/^[A-Za-z0-9]{48}$/);

    // The region's Service exposes the http port only (the peer port stays on pod IPs).
    const svc = one<K8sObject & { spec: { type: string; selector: Record<string, string>; ports: { port: number; targetPort: string }[] } }>(objs, 'Service', 'edge-isolates-agent-eu-west');
    expect(svc.spec).toMatchObject({ type: 'ClusterIP', ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }] });
    expect(ds.spec.template.metadata.labels).toMatchObject(svc.spec.selector);
    expect(byKind(objs, 'ServiceMonitor')).toEqual([]);

    for (const w of [op, ds]) expectRestricted(w);
    for (const sa of byKind<K8sObject & { automountServiceAccountToken?: boolean }>(objs, 'ServiceAccount')) expect(sa.automountServiceAccountToken).toBe(false);
  });

  it('three regions: a DaemonSet, Service and PDB each, with the region\'s own selector, tolerations and resources', async () => {
    // As on a cluster with the Prometheus Operator (the example asks for a ServiceMonitor).
    const objs = await render(chart.dir, { values: [examplePath('three-regions')], apiVersions: [SERVICE_MONITOR_API] });
    const regions = ['eu-west', 'us-east', 'ap-south'];
    expect(names(objs)).toEqual([
      ...BASE, ...regions.flatMap(perRegion), 'Secret/edge-isolates-peer-token', 'Secret/edge-isolates-nats-tls', 'Service/edge-isolates-agent-metrics', 'ServiceMonitor/edge-isolates',
      AGENT_POLICY, NATS_POLICY,
    ].sort());
    const pods = Object.fromEntries(regions.map((r) => [r, one<Workload>(objs, 'DaemonSet', `edge-isolates-agent-${r}`).spec.template.spec]));
    expect(pods['ap-south']!.nodeSelector).toEqual({
      'topology.kubernetes.io/region': 'ap-south', 'edge.isolates.dev/pool': 'isolate', 'node.kubernetes.io/instance-type': 'c6i.2xlarge',
    });
    expect(pods['ap-south']!.tolerations).toEqual([{ key: 'dedicated', operator: 'Equal', value: 'batch', effect: 'NoSchedule' }]);
    expect(pods['eu-west']!.tolerations).toBeUndefined();
    expect(pods['us-east']!.containers[0]!.resources).toEqual({ requests: { cpu: '1', memory: '1Gi' }, limits: { memory: '8Gi' } });
    expect(pods['eu-west']!.containers[0]!.resources).toEqual({ requests: { cpu: '500m', memory: '512Mi' }, limits: { memory: '4Gi' } });
    for (const r of regions) {
      expect(arg(pods[r]!.containers[0]!, 'region')).toBe(r);
      const svc = one<K8sObject & { spec: Record<string, unknown> }>(objs, 'Service', `edge-isolates-agent-${r}`);
      expect(svc.spec).toMatchObject({ type: 'LoadBalancer', externalTrafficPolicy: 'Local', selector: { 'edge.isolates.dev/region': r } });
      expectRestricted(one<Workload>(objs, 'DaemonSet', `edge-isolates-agent-${r}`));
    }
    expect(one(objs, 'Service', 'edge-isolates-agent-eu-west').metadata.annotations).toEqual({ 'example.com/region': 'eu-west' });
    const sm = one<K8sObject & { spec: { selector: { matchLabels: Record<string, string> }; endpoints: { port: string; path: string }[] } }>(objs, 'ServiceMonitor', 'edge-isolates');
    expect(sm.metadata.labels).toMatchObject({ release: 'prometheus' });
    expect(sm.spec.endpoints).toEqual([expect.objectContaining({ port: 'metrics', path: '/metrics' })]);
    // It selects both metrics Services, and they name their port "metrics".
    const metricsServices = byKind<K8sObject & { spec: { ports: { name: string }[] } }>(objs, 'Service')
      .filter((s) => Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => s.metadata.labels?.[k] === v));
    expect(names(metricsServices)).toEqual(['Service/edge-isolates-agent-metrics', 'Service/edge-isolates-operator-metrics']);
    for (const s of metricsServices) expect(s.spec.ports.map((p) => p.name)).toEqual(['metrics']);
  });

  it('external NATS: the URL given, no NATS objects, an existing peer-token Secret', async () => {
    const objs = await render(chart.dir, { values: [examplePath('external-nats')] });
    expect(names(objs)).toEqual([...BASE, ...perRegion('eu-west'), ...perRegion('us-east'), 'Service/edge-isolates-agent-metrics', AGENT_POLICY].sort());
    for (const w of [...byKind<Workload>(objs, 'DaemonSet'), ...byKind<Workload>(objs, 'Deployment')]) {
      expect(arg(w.spec.template.spec.containers[0]!, 'nats')).toBe('nats://nats.messaging.svc.cluster.local:4222');
      if (w.kind === 'DaemonSet') {
        expect(w.spec.template.spec.containers[0]!.env?.find((e) => e.name === 'EDGE_PEER_TOKEN')?.valueFrom?.secretKeyRef)
          .toEqual({ name: 'edge-peer-token', key: 'token' });
      }
    }
  });

  it('NATS: a user per role with the permissions of common/nats-auth.ts, TLS, passwords and the sealing key from Secrets', async () => {
    // The NATS chart's values: the same users and permissions as the code (one source), passwords by reference only.
    const values = parse(readFileSync(join(CHART_DIR, 'values.yaml'), 'utf8')) as {
      nats: { config: { nats: { tls: { enabled: boolean; secretName: string } }; merge: { authorization: { users: { user: string; password: string; permissions: unknown }[] } } }; container: { env: Record<string, { valueFrom: { secretKeyRef: { name: string; key: string } } }> } };
      natsAuth: { secretName: string }; natsTls: { secretName: string };
    };
    const users = values.nats.config.merge.authorization.users;
    expect(users.map((u) => u.user)).toEqual([NATS_USERS.operator, NATS_USERS.agent, NATS_USERS.logs]);
    for (const [i, role] of (['operator', 'agent', 'logs'] as const).entries()) {
      expect(users[i]!.permissions, role).toEqual(natsPermissions(role));
      const env = `EDGE_NATS_${role.toUpperCase()}_PASSWORD`;
      expect(users[i]!.password).toBe(`<< $${env} >>`);
      expect(values.nats.container.env[env]!.valueFrom.secretKeyRef).toEqual({ name: values.natsAuth.secretName, key: role });
    }
    expect(values.nats.config.nats.tls).toEqual({ enabled: true, secretName: values.natsTls.secretName });

    const objs = await render(chart.dir, { values: [examplePath('one-region')] });
    const auth = one<K8sObject & { data: Record<string, string> }>(objs, 'Secret', 'edge-isolates-nats-auth');
    expect(Object.keys(auth.data).sort()).toEqual(['agent', 'logs', 'operator']);
    for (const v of Object.values(auth.data)) expect(Buffer.from(v, 'base64').toString()).toMatch(/^[A-Za-z0-9]{40}$/);
    const sealing = one<K8sObject & { data: Record<string, string> }>(objs, 'Secret', 'edge-isolates-sealing-key');
    expect(Buffer.from(sealing.data.key!, 'base64').length).toBeGreaterThanOrEqual(32);
    // The server certificate names the NATS Service and is signed by the CA the clients trust.
    const tls = one<K8sObject & { type: string; data: Record<string, string> }>(objs, 'Secret', 'edge-isolates-nats-tls');
    expect(tls.type).toBe('kubernetes.io/tls');
    const cert = new X509Certificate(Buffer.from(tls.data['tls.crt']!, 'base64'));
    const ca = new X509Certificate(Buffer.from(tls.data['ca.crt']!, 'base64'));
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.subjectAltName).toContain('DNS:edge-isolates-nats.edge-system.svc.cluster.local');

    const pods: [Workload, string][] = [[one<Workload>(objs, 'Deployment', 'edge-isolates-operator'), 'operator'], [one<Workload>(objs, 'DaemonSet', 'edge-isolates-agent-eu-west'), 'agent']];
    for (const [w, role] of pods) {
      const c = w.spec.template.spec.containers[0]!;
      expect(arg(c, 'nats')).toMatch(/^tls:\/\//);
      expect(arg(c, 'nats-user')).toBe(NATS_USERS[role as 'operator' | 'agent']);
      expect(arg(c, 'nats-ca')).toBe('/etc/edge-isolates/nats-ca/ca.crt');
      expect(arg(c, 'sealing-key-file')).toBe('/etc/edge-isolates/sealing/key');
      // The password from the Secret, never in args.
      expect(c.env?.find((e) => e.name === 'EDGE_NATS_PASSWORD')?.valueFrom?.secretKeyRef).toEqual({ name: 'edge-isolates-nats-auth', key: role });
      expect(JSON.stringify(c.args)).not.toMatch(/password=/);
      // Of the TLS Secret only ca.crt is mounted: the server's key stays with the server.
      const vols = w.spec.template.spec.volumes ?? [];
      expect(vols.find((v) => v.name === 'nats-ca')?.secret).toEqual({ secretName: 'edge-isolates-nats-tls', items: [{ key: 'ca.crt', path: 'ca.crt' }] });
      expect(vols.find((v) => v.name === 'sealing-key')?.secret).toEqual({ secretName: 'edge-isolates-sealing-key', items: [{ key: 'key', path: 'key' }] });
    }

    // Without TLS on the server, clients are not told to use it; a mismatched Secret name fails.
    const plain = await render(chart.dir, { set: ['regions[0].name=eu-west', 'nats.config.nats.tls.enabled=false'] });
    expect(arg(one<Workload>(plain, 'Deployment', 'edge-isolates-operator').spec.template.spec.containers[0]!, 'nats')).toMatch(/^nats:\/\//);
    expect(arg(one<Workload>(plain, 'Deployment', 'edge-isolates-operator').spec.template.spec.containers[0]!, 'nats-ca')).toBeUndefined();
    expect(names(plain)).not.toContain('Secret/edge-isolates-nats-tls');
    await expect(render(chart.dir, { set: ['nats.config.nats.tls.secretName=other'] })).rejects.toThrow(/must equal natsTls.secretName/);
    await expect(render(chart.dir, { set: ['nats.container.env.EDGE_NATS_AGENT_PASSWORD.valueFrom.secretKeyRef.name=other'] })).rejects.toThrow(/must be natsAuth.secretName/);
  });

  it('grants the operator exactly the permissions its code uses, and the agents none', async () => {
    const objs = await render(chart.dir, { values: [examplePath('one-region')] });
    const cr = one<K8sObject & { rules: Rule[] }>(objs, 'ClusterRole', 'edge-isolates-operator');
    expect(flattenRules(cr.rules)).toEqual(OPERATOR_CLUSTER_PERMISSIONS);
    const role = one<K8sObject & { rules: Rule[] }>(objs, 'Role', 'edge-isolates-operator-leader-election');
    expect(flattenRules(role.rules)).toEqual(operatorLeasePermissions('edge-isolates-operator'));
    // Workloads: only the model servers, only in the model namespace (the release's by default).
    const models = one<K8sObject & { rules: Rule[] }>(objs, 'Role', 'edge-isolates-operator-model-servers');
    expect(models.metadata.namespace).toBe('edge-system');
    expect(flattenRules(models.rules)).toEqual(OPERATOR_MODEL_SERVER_PERMISSIONS);
    expect(arg(one<Workload>(objs, 'Deployment', 'edge-isolates-operator').spec.template.spec.containers[0]!, 'model-namespace')).toBe('edge-system');
    for (const b of [...byKind(objs, 'ClusterRoleBinding'), ...byKind(objs, 'RoleBinding')] as (K8sObject & { subjects: unknown[] })[]) {
      expect(b.subjects).toEqual([{ kind: 'ServiceAccount', name: 'edge-isolates-operator', namespace: 'edge-system' }]);
    }
  });

  it('creates the default EdgePolicy from the values and one EdgeModel per catalogue entry', async () => {
    const objs = await render(chart.dir, { values: [examplePath('one-region')], set: ['models[0].name=llama', 'models[0].model=llama-3.1-8b-instruct', 'models[0].gpus=2', 'policy.gpu.maxGpus=4'] });
    const pol = one<K8sObject & { spec: Record<string, unknown> }>(objs, 'EdgePolicy', 'edge-isolates-default');
    expect(pol.spec).toMatchObject({ namespaces: ['*'], gpu: { maxGpus: 4 }, limits: { max: { cpuMsPerRequest: 1000 } }, egress: { publicInternet: true, allow: [] } });
    expect(pol.spec.routes).toBeUndefined();
    expect(one<K8sObject & { spec: unknown }>(objs, 'EdgeModel', 'llama').spec).toEqual({ model: 'llama-3.1-8b-instruct', gpus: 2 });
    const none = await render(chart.dir, { values: [examplePath('one-region')], set: ['policy.create=false'] });
    expect(byKind(none, 'EdgePolicy')).toEqual([]);
    const bge = await render(chart.dir, { values: [examplePath('one-region')], set: ['models[0].name=bge', 'models[0].model=@cf/baai/bge-base-en-v1.5', 'models[0].task=text-embeddings', 'models[0].source=BAAI/bge-base-en-v1.5', 'models[0].gpus=0'] });
    expect(one<K8sObject & { spec: unknown }>(bge, 'EdgeModel', 'bge').spec).toEqual({ model: '@cf/baai/bge-base-en-v1.5', task: 'text-embeddings', source: 'BAAI/bge-base-en-v1.5', gpus: 0 });
  });

  it('names objects after the release, and follows the NATS chart\'s naming', async () => {
    const objs = await render(chart.dir, { release: 'prod', namespace: 'edge', set: ['regions[0].name=eu-west'] });
    expect(names(objs)).toContain('DaemonSet/prod-edge-isolates-agent-eu-west');
    const op = one<Workload>(objs, 'Deployment', 'prod-edge-isolates-operator');
    expect(arg(op.spec.template.spec.containers[0]!, 'nats')).toBe('tls://prod-nats.edge.svc.cluster.local:4222');
    expect(arg(op.spec.template.spec.containers[0]!, 'leader-elect-resource-name')).toBe('prod-edge-isolates-operator');
    const natsRelease = await render(chart.dir, { release: 'edge-nats', set: ['clusterDomain=corp.internal'] });
    expect(arg(one<Workload>(natsRelease, 'Deployment', 'edge-nats-edge-isolates-operator').spec.template.spec.containers[0]!, 'nats'))
      .toBe('tls://edge-nats.edge-system.svc.corp.internal:4222');
  });

  it('ships NetworkPolicies: peer port from agents only, admin ports and the NATS monitor from metricsFrom only, NATS clients and model servers from the release only', async () => {
    const monitoring = { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } };
    const objs = await render(chart.dir, {
      values: [examplePath('one-region')],
      set: ['networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring', 'networkPolicy.modelServerNamespaces[0]=shop'],
    });
    type Peer = { podSelector?: { matchLabels: Record<string, string> }; namespaceSelector?: { matchLabels?: Record<string, string> }; ipBlock?: { cidr: string; except?: string[] } };
    type Rule = { ports?: { port: string | number; protocol: string }[]; from?: Peer[]; to?: Peer[] };
    type Policy = K8sObject & { spec: { podSelector: { matchLabels: Record<string, string> }; policyTypes: string[]; ingress?: Rule[]; egress?: Rule[] } };
    const policy = (name: string, ns = 'edge-system') => {
      const p = byKind<Policy>(objs, 'NetworkPolicy').find((o) => o.metadata.name === name && o.metadata.namespace === ns);
      if (!p) throw new Error(`no NetworkPolicy ${ns}/${name}`);
      return p;
    };
    const selects = (p: Policy, w: Workload) => Object.entries(p.spec.podSelector.matchLabels).every(([k, v]) => w.spec.template.metadata.labels[k] === v);
    const ds = one<Workload>(objs, 'DaemonSet', 'edge-isolates-agent-eu-west');
    const op = one<Workload>(objs, 'Deployment', 'edge-isolates-operator');
    const agentPods = { podSelector: { matchLabels: { 'app.kubernetes.io/component': 'agent', 'app.kubernetes.io/instance': 'edge-isolates', 'app.kubernetes.io/name': 'edge-isolates' } } };
    const operatorPods = { podSelector: { matchLabels: { 'app.kubernetes.io/component': 'operator', 'app.kubernetes.io/instance': 'edge-isolates', 'app.kubernetes.io/name': 'edge-isolates' } } };
    const ingressOn = (p: Policy, port: string | number) => p.spec.ingress?.filter((r) => r.ports?.some((x) => x.port === port)) ?? [];

    const agent = policy('edge-isolates-agent');
    expect(selects(agent, ds) && !selects(agent, op)).toBe(true);
    expect(agent.spec.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(ingressOn(agent, 'peer')).toEqual([{ ports: [{ port: 'peer', protocol: 'TCP' }], from: [agentPods] }]);
    expect(ingressOn(agent, 'metrics')).toEqual([{ ports: [{ port: 'metrics', protocol: 'TCP' }], from: [monitoring] }]);
    expect(ingressOn(agent, 'http')).toEqual([{ ports: [{ port: 'http', protocol: 'TCP' }] }]);
    // Egress: public addresses only, as the agent's own policy (no metadata, cluster or node ranges).
    const blocks = agent.spec.egress!.flatMap((r) => r.to ?? []).filter((t) => t.ipBlock).map((t) => t.ipBlock!);
    expect(blocks.map((b) => b.cidr)).toEqual(['0.0.0.0/0', '::/0']);
    expect(blocks[0]!.except).toEqual(expect.arrayContaining(['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16', '127.0.0.0/8', '100.64.0.0/10']));
    expect(blocks[1]!.except).toEqual(expect.arrayContaining(['fc00::/7', 'fe80::/10']));
    for (const r of agent.spec.egress!) expect(r.to ?? r.ports, 'no egress rule is open to everything').toBeDefined();

    const operator = policy('edge-isolates-operator');
    expect(selects(operator, op) && !selects(operator, ds)).toBe(true);
    expect(operator.spec.ingress).toEqual([{ ports: [{ port: 'metrics', protocol: 'TCP' }], from: [monitoring] }]);

    const nats = policy('edge-isolates-nats');
    expect(nats.spec.podSelector.matchLabels).toEqual({ 'app.kubernetes.io/name': 'nats', 'app.kubernetes.io/instance': 'edge-isolates' });
    expect(ingressOn(nats, 4222)).toEqual([{ ports: [{ port: 4222, protocol: 'TCP' }], from: [operatorPods, agentPods] }]);
    expect(ingressOn(nats, 8222)).toEqual([{ ports: [{ port: 8222, protocol: 'TCP' }], from: [monitoring] }]);

    const models = policy('edge-isolates-model-servers', 'shop');
    expect(models.spec.podSelector.matchLabels).toEqual({ 'app.kubernetes.io/name': 'edge-inference', 'app.kubernetes.io/managed-by': 'edge-isolates' });
    expect(models.spec.ingress).toEqual([{ from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'edge-system' } }, ...agentPods }] }]);

    // Without metricsFrom nobody but the node (kubelet probes) reaches an admin port or the NATS monitor.
    const closed = await render(chart.dir, { values: [examplePath('one-region')] });
    for (const p of byKind<Policy>(closed, 'NetworkPolicy')) {
      for (const port of ['metrics', 8222]) expect(ingressOn(p, port), `${p.metadata.name} ${port}`).toEqual([]);
    }
    expect(byKind(await render(chart.dir, { values: [examplePath('one-region')], set: ['networkPolicy.enabled=false'] }), 'NetworkPolicy')).toEqual([]);
  });

  it('runs the agents with shards on by default, and passes the shard settings', async () => {
    const shardArgs = async (set: string[]) => one<Workload>(await render(chart.dir, { values: [examplePath('one-region')], set }), 'DaemonSet', 'edge-isolates-agent-eu-west')
      .spec.template.spec.containers[0]!.args?.filter((x) => x.startsWith('--shard'));
    expect(await shardArgs([])).toEqual(['--shards=on', '--shard-min=2', '--shard-max=8', '--shard-target-concurrency=4']);
    expect(await shardArgs(['agent.shards.enabled=false', 'agent.shards.min=1', 'agent.shards.max=3']))
      .toEqual(['--shards=off', '--shard-min=1', '--shard-max=3', '--shard-target-concurrency=4']);
  });

  it('passes egress allowances and the admin token to the agents', async () => {
    const objs = await render(chart.dir, {
      values: [examplePath('one-region')],
      set: ['agent.egressAllow[0]=10.20.0.0/16', 'agent.egressAllow[1]=db.example.internal:5432', 'agent.adminToken.existingSecret=edge-admin'],
    });
    const a = one<Workload>(objs, 'DaemonSet', 'edge-isolates-agent-eu-west').spec.template.spec.containers[0]!;
    expect(a.args?.filter((x) => x.startsWith('--egress-allow='))).toEqual(['--egress-allow=10.20.0.0/16', '--egress-allow=db.example.internal:5432']);
    expect(a.env?.find((e) => e.name === 'EDGE_ADMIN_TOKEN')?.valueFrom?.secretKeyRef).toEqual({ name: 'edge-admin', key: 'token' });
    const plain = one<Workload>(await render(chart.dir, { values: [examplePath('one-region')] }), 'DaemonSet', 'edge-isolates-agent-eu-west');
    expect(plain.spec.template.spec.containers[0]!.env?.map((e) => e.name)).not.toContain('EDGE_ADMIN_TOKEN');
  });

  it('passes the JetStream replicas to the operator, which creates every stream with them', async () => {
    const args = async (set: string[]) => one<Workload>(await render(chart.dir, { values: [examplePath('one-region')], set }), 'Deployment', 'edge-isolates-operator')
      .spec.template.spec.containers[0]!.args?.filter((x) => x.startsWith('--actor-log-replicas='));
    expect(await args([])).toEqual(['--actor-log-replicas=1']);
    expect(await args(['operator.jetstreamReplicas=3'])).toEqual(['--actor-log-replicas=3']);
  });

  it('drops the operator\'s PodDisruptionBudget when one replica would make it block every drain', async () => {
    const objs = await render(chart.dir, { set: ['operator.replicas=1', 'regions[0].name=eu-west'] });
    expect(names(byKind(objs, 'PodDisruptionBudget'))).toEqual(['PodDisruptionBudget/edge-isolates-agent-eu-west']);
    const off = await render(chart.dir, { set: ['podDisruptionBudget.enabled=false', 'regions[0].name=eu-west'] });
    expect(byKind(off, 'PodDisruptionBudget')).toEqual([]);
  });

  it('ships the generated CRDs, identical to crds/', async () => {
    const objs = await render(chart.dir, { includeCrds: true });
    const crds = byKind(objs, 'CustomResourceDefinition');
    const files = readdirSync(join(REPO_ROOT, 'crds')).filter((f) => f.endsWith('.yaml')).sort();
    expect(crds.map((c) => `${c.metadata.name}.yaml`).sort()).toEqual(files);
    for (const f of files) {
      expect(readFileSync(join(CHART_DIR, 'crds', f), 'utf8')).toBe(readFileSync(join(REPO_ROOT, 'crds', f), 'utf8'));
      expect(crds.find((c) => `${c.metadata.name}.yaml` === f)).toEqual(parse(readFileSync(join(REPO_ROOT, 'crds', f), 'utf8')));
    }
  });

  it('kind-e2e.sh installs agents in exactly the regions of kind-config.yaml', () => {
    const script = readFileSync(join(REPO_ROOT, 'scripts/kind-e2e.sh'), 'utf8');
    const inScript = /^REGIONS=\(([^)]*)\)/m.exec(script)?.[1]?.trim().split(/\s+/).sort();
    const kind = parse(readFileSync(join(REPO_ROOT, 'kind-config.yaml'), 'utf8')) as { nodes: { labels?: Record<string, string> }[] };
    const inKind = [...new Set(kind.nodes.map((n) => n.labels?.['topology.kubernetes.io/region']).filter(Boolean))].sort();
    expect(inScript).toEqual(inKind);
    expect(script).toContain('--config kind-config.yaml');
  });

  it.each([
    [['regions[0].name=EU West'], /at '\/regions\/0\/name': 'EU West' does not match pattern/],
    [['regions[0].nodeSelektor.x=y', 'regions[0].name=eu-west'], /at '\/regions\/0': additional properties 'nodeSelektor' not allowed/],
    [['operator.replicas=two'], /at '\/operator\/replicas': got string, want integer/],
    [['operator.replicas=0'], /at '\/operator\/replicas': minimum: got 0, want 1/],
    [['nats.enabled=false'], /at '\/nats\/url': minLength: got 0, want 1/],
    [['nats.url=http://nats:4222'], /at '\/nats\/url': 'http:\/\/nats:4222' does not match pattern/],
    [['agent.service.type=Ingress'], /at '\/agent\/service\/type': value must be one of 'ClusterIP', 'NodePort', 'LoadBalancer'/],
    [['agent.ports.http=70000'], /at '\/agent\/ports\/http': maximum: got 70,000, want 65,535/],
    [['image.pullPolicy=Sometimes'], /at '\/image\/pullPolicy': value must be one of/],
    [['agent.resources.limits.memory=lots'], /at '\/agent\/resources\/limits\/memory'/],
    [['securityContext.runAsUser=0'], /at '\/securityContext\/runAsUser': minimum: got 0, want 1/],
    [['regions[0].name=eu-west', 'regions[1].name=eu-west'], /region "eu-west" is listed twice/],
  ])('refuses %j with a message naming the value', async (set, message) => {
    await expect(render(chart.dir, { set })).rejects.toThrow(message);
  });
});
