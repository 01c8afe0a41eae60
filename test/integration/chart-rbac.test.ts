import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AppsV1Api, CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Condition, EdgeWorker } from '../../common/api/index.js';
import { FINALIZER, REGION_LABEL, WORKER_LABEL, WORKER_NAMESPACE_LABEL } from '../../common/labels.js';
import { openBuckets, type EdgeBuckets } from '../../common/nats.js';
import { workerKey } from '../../common/keys.js';
import { crPath, KubeClient } from '../../operator/runtime/kube-client.js';
import { kubeconfigYaml } from '../../cli/local/control-plane.js';
import { LocalCluster, QUICK_FAILOVER, type LocalOperator } from '../../cli/local/cluster.js';
import { get } from '../harness/http.js';
import {
  OPERATOR_CLUSTER_PERMISSIONS, OPERATOR_MODEL_SERVER_PERMISSIONS, flattenRules, helm, operatorLeasePermissions, preparedChart, type Rule,
} from '../harness/chart.js';
import { waitFor } from '../../cli/local/ports.js';

// The chart's RBAC is enough, and no more: the chart is installed into an edge cluster's own
// apiserver, `edge operator` runs with a token of the chart's operator ServiceAccount (made
// with the TokenRequest API; not admin) and goes through the operator's main flows; then the
// ServiceAccount's effective permissions are compared with what the code uses, and calls
// outside them are denied.

const RELEASE_NS = 'edge-system';
const SA = 'edge-isolates-operator';
const LEASE = 'edge-isolates-operator';
const NS = 'shop';
const MODEL = 'tiny-llama';

const hello = (text: string) => `export default { async fetch(request, env) { return new Response(${JSON.stringify(text)} + (env.SUFFIX ?? '')); } };`;

interface Attrs { verb: string; resource: string; group?: string; namespace?: string; subresource?: string; name?: string }
const describeAttrs = (a: Attrs) => `${a.verb} ${a.group ? `${a.group}/` : ''}${a.resource}${a.subresource ? `/${a.subresource}` : ''}${a.name ? ` ${a.name}` : ''}${a.namespace ? ` in ${a.namespace}` : ' (cluster-wide)'}`;

interface RulesReview { status: { resourceRules: Rule[]; nonResourceRules: { verbs: string[]; nonResourceURLs: string[] }[]; incomplete: boolean } }

describe('the chart\'s operator ServiceAccount runs the operator', () => {
  let cluster: LocalCluster;
  let admin: KubeClient;
  let nc: NatsConnection;
  let buckets: EdgeBuckets;
  let operator: LocalOperator;
  const chart = preparedChart();

  const read = (name: string) => admin.request<EdgeWorker>('GET', crPath('edgeworkers', NS, name));
  const cond = (ew: EdgeWorker, type: string): Condition | undefined => ew.status?.conditions?.find((c) => c.type === type);
  const create = (name: string, spec: Record<string, unknown>) => admin.request('POST', crPath('edgeworkers', NS), {
    body: { apiVersion: 'edge.isolates.dev/v1alpha1', kind: 'EdgeWorker', metadata: { name, namespace: NS }, spec },
  });
  async function waitCondition(name: string, type: string, status: string, reason?: string): Promise<EdgeWorker> {
    let last: EdgeWorker | undefined;
    await waitFor(`${name} ${type}=${status}${reason ? ` (${reason})` : ''}`, async () => {
      last = await read(name);
      const c = cond(last, type);
      return c?.status === status && (!reason || c.reason === reason) && c.observedGeneration === last.metadata.generation;
    }, 30_000, 100).catch((err: unknown) => { throw new Error(`${String(err)}; last status: ${JSON.stringify(last?.status)}`); });
    return last!;
  }

  /** A kubeconfig holding a fresh token of a ServiceAccount (TokenRequest API). */
  async function serviceAccountKubeconfig(namespace: string, name: string): Promise<string> {
    const tr = await admin.request<{ status: { token: string } }>('POST', `/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`, {
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds: 3600 } },
    });
    const path = join(cluster.cp.dir, `${namespace}-${name}.kubeconfig`);
    writeFileSync(path, kubeconfigYaml(cluster.cp.apiserverUrl, cluster.cp.caPem, tr.status.token, name), { mode: 0o600 });
    return path;
  }

  /** Effective permissions of a kubeconfig's user in a namespace (what `kubectl auth can-i --list` shows). */
  async function rulesOf(kubeconfigPath: string, namespace: string): Promise<{ resources: string[]; nonResources: string[] }> {
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfigPath);
    const review = await new KubeClient(kc).request<RulesReview>('POST', '/apis/authorization.k8s.io/v1/selfsubjectrulesreviews', {
      body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectRulesReview', spec: { namespace } },
    });
    expect(review.status.incomplete).toBe(false);
    const nonResources = review.status.nonResourceRules.flatMap((r) => r.verbs.flatMap((v) => r.nonResourceURLs.map((u) => `${u}:${v}`)));
    return { resources: flattenRules(review.status.resourceRules), nonResources: [...new Set(nonResources)].sort() };
  }

  /** SubjectAccessReview for the operator's ServiceAccount. */
  async function allowed(attrs: Attrs, sa = SA): Promise<boolean> {
    const review = await admin.request<{ status: { allowed: boolean } }>('POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
      body: {
        apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview',
        spec: {
          user: `system:serviceaccount:${RELEASE_NS}:${sa}`,
          groups: ['system:serviceaccounts', `system:serviceaccounts:${RELEASE_NS}`, 'system:authenticated'],
          resourceAttributes: { group: '', ...attrs },
        },
      },
    });
    return review.status.allowed;
  }

  beforeAll(async () => {
    cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: ['eu-west', 'us-east'], models: { model: MODEL } });
    admin = new KubeClient(cluster.kubeConfig);
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    for (const name of [RELEASE_NS, NS]) await core.createNamespace({ body: { metadata: { name } } });
    // The CRDs are in already (LocalCluster applies crds/, which the chart's crds/ equals).
    const { stdout } = await helm([
      'install', 'edge-isolates', chart.dir, '--namespace', RELEASE_NS, '--skip-crds',
      '--set', 'nats.enabled=false', '--set', `nats.url=${cluster.cp.natsUrl}`,
      '--set', 'regions[0].name=eu-west', '--set', 'regions[1].name=us-east',
    ], cluster.cp.kubeconfigPath);
    expect(stdout).toMatch(/STATUS: deployed/);
    nc = await connect(cluster.cp.natsOptions());
    buckets = await openBuckets(nc);
    const kubeconfig = await serviceAccountKubeconfig(RELEASE_NS, SA);
    // The flags the chart's Deployment passes that decide which calls it makes.
    operator = await cluster.startOperator('operator-a', { kubeconfig, leaseNamespace: RELEASE_NS, leaseName: LEASE, args: ['--model-namespace', RELEASE_NS] });
  }, 240_000);

  afterAll(async () => {
    await nc?.close();
    await cluster?.stop();
    chart.cleanup();
  });

  it('wins the Lease in the release namespace', async () => {
    await waitFor('operator-a leads', async () => (await cluster.operatorStatus(operator))?.leader === true, 30_000, 100);
    const lease = await admin.request<{ spec: { holderIdentity?: string } }>('GET', `/apis/coordination.k8s.io/v1/namespaces/${RELEASE_NS}/leases/${LEASE}`);
    expect(lease.spec.holderIdentity).toBe('operator-a');
  });

  it('places a worker in two regions; the agents answer; status and Events are written', async () => {
    await create('hello', { source: { inline: hello('hi') }, routes: [{ host: 'hello.test' }], placement: { regions: ['eu-west', 'us-east'] } });
    const ew = await waitCondition('hello', 'Ready', 'True');
    expect(ew.metadata.finalizers).toEqual([FINALIZER]);
    expect(ew.status?.regions).toMatchObject([
      { name: 'eu-west', desiredAgents: 1, readyAgents: 1 },
      { name: 'us-east', desiredAgents: 1, readyAgents: 1 },
    ]);
    // Shards are on by default: a one-agent region's shard is that agent.
    expect(ew.status?.regions?.map((r) => r.shard?.length)).toEqual([1, 1]);
    expect(await get(cluster.agent('eu-west'), 'hello.test')).toEqual({ status: 200, text: 'hi' });
    expect(await get(cluster.agent('us-east'), 'hello.test')).toEqual({ status: 200, text: 'hi' });
    await waitFor('an Event from operator-a', async () => {
      const events = await cluster.kubeConfig.makeApiClient(CoreV1Api).listNamespacedEvent({ namespace: NS });
      return events.items.some((e) => e.involvedObject.name === 'hello' && e.reportingInstance === 'operator-a');
    }, 10_000, 100);
  });

  it('resolves a ConfigMap source and a Secret binding', async () => {
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    await create('from-cm', {
      source: { configMapRef: { name: 'code', key: 'worker.js' } },
      routes: [{ host: 'cm.test' }],
      placement: { regions: ['us-east'] },
      bindings: { secrets: [{ name: 'SUFFIX', secretKeyRef: { name: 'creds', key: 'suffix' } }] },
    });
    await waitCondition('from-cm', 'Ready', 'False', 'SourceNotFound');
    await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'code' }, data: { 'worker.js': hello('from a ConfigMap') } } });
    await waitCondition('from-cm', 'Ready', 'False', 'SecretNotFound');
    await core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 'creds' }, stringData: { suffix: ' + secret' } } });
    await waitCondition('from-cm', 'Ready', 'True');
    expect(await get(cluster.agent('us-east'), 'cm.test')).toEqual({ status: 200, text: 'from a ConfigMap + secret' });
  });

  it('creates the inference Deployment and Service of an ai binding in each region, in the model namespace', async () => {
    await create('chat', {
      source: { inline: `export default { async fetch(request, env) { const r = await env.AI.run(${JSON.stringify(MODEL)}, { prompt: 'hi' }); return new Response(r.response); } };` },
      routes: [{ host: 'chat.test' }],
      placement: { regions: ['eu-west', 'us-east'] },
      limits: { cpuMsPerRequest: 200 },
      bindings: { ai: [{ name: 'AI', model: MODEL, gpus: 1, replicasPerRegion: 1 }] },
    });
    await waitCondition('chat', 'Ready', 'True');
    // None in the tenant's namespace: the operator may not write workloads there.
    expect((await cluster.kubeConfig.makeApiClient(AppsV1Api).listNamespacedDeployment({ namespace: NS })).items).toEqual([]);
    const deps = (await cluster.kubeConfig.makeApiClient(AppsV1Api).listNamespacedDeployment({ namespace: RELEASE_NS, labelSelector: WORKER_LABEL })).items;
    const svcs = (await cluster.kubeConfig.makeApiClient(CoreV1Api).listNamespacedService({ namespace: RELEASE_NS, labelSelector: WORKER_LABEL })).items;
    expect(deps.map((d) => d.spec?.template.spec?.nodeSelector?.[REGION_LABEL]).sort()).toEqual(['eu-west', 'us-east']);
    expect(svcs).toHaveLength(2);
    for (const d of deps) {
      expect(d.metadata?.labels).toMatchObject({ [WORKER_LABEL]: 'chat', [WORKER_NAMESPACE_LABEL]: NS });
      // The catalogue's image (the operator's --ai-image), whatever the tenant wrote.
      expect(d.spec?.template.spec?.containers[0]?.image).toBe('vllm/vllm-openai:v0.11.0');
    }
    const res = await get(cluster.agent('eu-west'), 'chat.test');
    expect(res.status).toBe(200);
    expect(res.text).toContain('[eu-west]');
  });

  it('deletes workers: NATS state and inference objects go, the finalizer lets go', async () => {
    const digest = (await read('hello')).status!.bundleDigest!;
    for (const name of ['hello', 'chat']) await admin.request('DELETE', crPath('edgeworkers', NS, name));
    await waitFor('hello and chat gone', async () => {
      const list = await admin.request<{ items: unknown[] }>('GET', crPath('edgeworkers', NS));
      return list.items.length === 1;
    }, 30_000, 100);
    const entry = await buckets.workers.get(workerKey(NS, 'hello'));
    expect(entry === null || entry.operation !== 'PUT').toBe(true);
    const info = await buckets.bundles.info(digest);
    expect(info === null || info.deleted).toBe(true);
    await waitFor('agent stops serving hello', async () => (await get(cluster.agent('eu-west'), 'hello.test')).status === 404, 10_000, 100);
    await waitFor('inference Deployments removed', async () => (await cluster.kubeConfig.makeApiClient(AppsV1Api).listNamespacedDeployment({ namespace: RELEASE_NS, labelSelector: WORKER_LABEL })).items.length === 0, 30_000, 100);
    expect((await cluster.kubeConfig.makeApiClient(CoreV1Api).listNamespacedService({ namespace: RELEASE_NS, labelSelector: WORKER_LABEL })).items).toEqual([]);
  });

  it('was never refused anything by the apiserver', () => {
    const log = readFileSync(operator.proc.logFile, 'utf8');
    expect(log.split('\n').filter((l) => /forbidden|\b403\b/i.test(l))).toEqual([]);
    expect(operator.proc.running).toBe(true);
  });

  it('holds exactly the permissions the code uses, and the agents none', async () => {
    // What every authenticated ServiceAccount may do (discovery, self reviews): a
    // ServiceAccount with no bindings at all.
    await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespacedServiceAccount({ namespace: RELEASE_NS, body: { metadata: { name: 'nobody' } } });
    const baseline = await rulesOf(await serviceAccountKubeconfig(RELEASE_NS, 'nobody'), RELEASE_NS);
    expect(baseline.resources.some((r) => r.startsWith('authorization.k8s.io/selfsubjectrulesreviews'))).toBe(true);
    const opConfig = await serviceAccountKubeconfig(RELEASE_NS, SA);
    const extra = (r: { resources: string[] }) => r.resources.filter((x) => !baseline.resources.includes(x));

    const inRelease = await rulesOf(opConfig, RELEASE_NS);
    expect(extra(inRelease)).toEqual([...new Set([...OPERATOR_CLUSTER_PERMISSIONS, ...operatorLeasePermissions(LEASE), ...OPERATOR_MODEL_SERVER_PERMISSIONS])].sort());
    expect(inRelease.nonResources).toEqual(baseline.nonResources);
    const elsewhere = await rulesOf(opConfig, NS);
    expect(extra(elsewhere)).toEqual(OPERATOR_CLUSTER_PERMISSIONS);

    const agent = await rulesOf(await serviceAccountKubeconfig(RELEASE_NS, 'edge-isolates-agent'), RELEASE_NS);
    expect(agent).toEqual(baseline);
  });

  it.each(([
    { verb: 'create', group: 'edge.isolates.dev', resource: 'edgeworkers', namespace: NS },
    { verb: 'update', group: 'edge.isolates.dev', resource: 'edgeworkers', namespace: NS },
    { verb: 'delete', group: 'edge.isolates.dev', resource: 'edgeworkers', namespace: NS },
    { verb: 'get', group: 'edge.isolates.dev', resource: 'edgeworkers', namespace: NS },
    { verb: 'delete', group: 'edge.isolates.dev', resource: 'durableactors', namespace: NS },
    { verb: 'update', group: 'edge.isolates.dev', resource: 'edgeworkers', subresource: 'status', namespace: NS },
    { verb: 'get', resource: 'nodes' },
    { verb: 'patch', resource: 'nodes' },
    { verb: 'delete', resource: 'nodes' },
    { verb: 'create', resource: 'secrets', namespace: NS },
    // Secrets are read by name only: no enumeration, here or cluster-wide.
    { verb: 'list', resource: 'secrets', namespace: NS },
    { verb: 'watch', resource: 'secrets', namespace: NS },
    { verb: 'list', resource: 'secrets' },
    { verb: 'watch', resource: 'secrets' },
    // No workload writes outside the model namespace (issue 12: a cryptominer Deployment).
    { verb: 'create', group: 'apps', resource: 'deployments', namespace: NS },
    { verb: 'update', group: 'apps', resource: 'deployments', namespace: NS },
    { verb: 'delete', group: 'apps', resource: 'deployments', namespace: NS },
    { verb: 'create', resource: 'services', namespace: NS },
    { verb: 'delete', resource: 'services', namespace: NS },
    { verb: 'create', group: 'apps', resource: 'deployments' },
    { verb: 'update', group: 'edge.isolates.dev', resource: 'edgeworkers', subresource: 'finalizers', namespace: NS },
    // The admin's kinds are read only.
    { verb: 'create', group: 'edge.isolates.dev', resource: 'edgepolicies' },
    { verb: 'patch', group: 'edge.isolates.dev', resource: 'edgepolicies' },
    { verb: 'delete', group: 'edge.isolates.dev', resource: 'edgemodels' },
    { verb: 'create', group: 'edge.isolates.dev', resource: 'edgemodels' },
    { verb: 'update', resource: 'secrets', namespace: NS },
    { verb: 'delete', resource: 'secrets', namespace: NS },
    { verb: 'patch', resource: 'configmaps', namespace: NS },
    { verb: 'get', resource: 'pods', namespace: NS },
    { verb: 'create', resource: 'pods', namespace: NS },
    { verb: 'create', resource: 'pods', subresource: 'exec', namespace: NS },
    { verb: 'patch', group: 'apps', resource: 'deployments', namespace: NS },
    { verb: 'create', group: 'apps', resource: 'daemonsets', namespace: RELEASE_NS },
    { verb: 'watch', resource: 'services', namespace: NS },
    { verb: 'patch', resource: 'services', namespace: NS },
    { verb: 'update', resource: 'events', namespace: NS },
    { verb: 'delete', resource: 'events', namespace: NS },
    { verb: 'create', group: 'coordination.k8s.io', resource: 'leases', namespace: NS },
    { verb: 'update', group: 'coordination.k8s.io', resource: 'leases', namespace: RELEASE_NS, name: 'someone-else' },
    { verb: 'delete', group: 'coordination.k8s.io', resource: 'leases', namespace: RELEASE_NS, name: LEASE },
    { verb: 'create', resource: 'serviceaccounts', subresource: 'token', namespace: RELEASE_NS, name: SA },
    { verb: 'create', group: 'rbac.authorization.k8s.io', resource: 'clusterrolebindings' },
    { verb: 'escalate', group: 'rbac.authorization.k8s.io', resource: 'clusterroles' },
    { verb: 'impersonate', resource: 'serviceaccounts', namespace: RELEASE_NS },
    { verb: 'update', group: 'apiextensions.k8s.io', resource: 'customresourcedefinitions' },
  ] as Attrs[]).map((a) => [describeAttrs(a), a] as const))('denies %s', async (_, attrs) => {
    expect(await allowed(attrs)).toBe(false);
  });

  it('allows what the code does (spot checks through SubjectAccessReview)', async () => {
    for (const attrs of [
      { verb: 'watch', group: 'edge.isolates.dev', resource: 'edgeworkers' },
      { verb: 'patch', group: 'edge.isolates.dev', resource: 'durableactors', subresource: 'status', namespace: NS },
      { verb: 'get', resource: 'secrets', namespace: NS },
      { verb: 'watch', group: 'edge.isolates.dev', resource: 'edgepolicies' },
      { verb: 'list', group: 'edge.isolates.dev', resource: 'edgemodels' },
      { verb: 'create', group: 'apps', resource: 'deployments', namespace: RELEASE_NS },
      { verb: 'delete', resource: 'services', namespace: RELEASE_NS },
      { verb: 'create', resource: 'events', namespace: NS },
      { verb: 'update', group: 'coordination.k8s.io', resource: 'leases', namespace: RELEASE_NS, name: LEASE },
    ]) expect(await allowed(attrs), JSON.stringify(attrs)).toBe(true);
    // The agents' ServiceAccount: nothing.
    expect(await allowed({ verb: 'list', resource: 'configmaps', namespace: RELEASE_NS }, 'edge-isolates-agent')).toBe(false);
    expect(await allowed({ verb: 'get', resource: 'secrets', namespace: RELEASE_NS, name: 'edge-isolates-peer-token' }, 'edge-isolates-agent')).toBe(false);
  });
});
