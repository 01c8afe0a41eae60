import { describe, expect, it } from 'vitest';
import { ObjectSerializer } from '@kubernetes/client-node/dist/gen/models/ObjectSerializer.js';
import {
  AI_BINDING_LABEL, APP_INSTANCE_LABEL, APP_NAME_LABEL, GPU_TAINT_KEY, INFERENCE_APP, MANAGED_BY, MANAGED_BY_LABEL,
  POOL_GPU, POOL_LABEL, REGION_LABEL, SERVES_REGION_LABEL, SPEC_HASH_ANNOTATION, WORKER_LABEL, WORKER_NAMESPACE_LABEL,
} from '../../common/labels.js';
import {
  DEFAULT_INFERENCE_IMAGE, desiredInference, inferenceSelector, needsUpdate,
  type ModelServerBinding, type DesiredDeployment, type DesiredService,
} from '../../operator/controllers/inference.js';
import { inferenceName } from '../../common/model-servers.js';

const worker = { name: 'chat', namespace: 'team-a', uid: '0b0c6f0e-1111-2222-3333-444455556666' };
const opts = { defaultImage: DEFAULT_INFERENCE_IMAGE };
// What the EdgeWorker reconciler hands over once the catalogue resolved the binding.
const ai = (b: Partial<ModelServerBinding> & { name: string }): ModelServerBinding => ({ model: 'llama-3.1-8b', gpus: 1, replicasPerRegion: 1, ...b });

const DNS_1035 = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function one(bindings: ModelServerBinding[], region = 'eu-west'): { d: DesiredDeployment; s: DesiredService } {
  const out = desiredInference(worker, bindings, [region], opts);
  return { d: out.deployments[0]!, s: out.services[0]! };
}

const container = (d: DesiredDeployment) => d.spec.template.spec!.containers[0]!;

describe('inferenceName', () => {
  it('is deterministic, readable, and a DNS-1035 label of at most 63 characters', () => {
    const n = inferenceName('chat', 'AI', 'eu-west');
    expect(n).toBe(inferenceName('chat', 'AI', 'eu-west'));
    expect(n).toMatch(/^chat-ai-eu-west-[0-9a-f]{8}$/);
    expect(n).toMatch(DNS_1035);
  });

  it('never collides where lower-casing, sanitising or joining lose information', () => {
    const triples: [string, string, string][] = [
      ['chat', 'AI', 'eu-west'], ['chat', 'ai', 'eu-west'], ['chat', 'Ai', 'eu-west'],
      ['chat', 'A_I', 'eu-west'], ['chat', 'A$I', 'eu-west'], ['chat', 'a__i', 'eu-west'], ['chat', '_ai', 'eu-west'],
      ['chat-app', 'ai', 'eu'], ['chat', 'app', 'ai-eu'], // both would read chat-app-ai-eu
      ['chat', 'AI', 'us-east'], ['chat2', 'AI', 'eu-west'],
    ];
    const names = triples.map(([w, b, r]) => inferenceName(w, b, r));
    expect(new Set(names).size).toBe(triples.length);
    for (const n of names) expect(n).toMatch(DNS_1035);
  });

  it('truncates long parts and still tells apart names that differ only at the end', () => {
    const w = 'w'.repeat(63);
    const b = 'B'.repeat(63);
    const names = [
      inferenceName(w, `${b}x`, 'r'.repeat(63)), inferenceName(w, `${b}y`, 'r'.repeat(63)),
      inferenceName(w, b, `${'r'.repeat(62)}s`), inferenceName(`${'w'.repeat(62)}v`, b, 'r'.repeat(63)),
    ];
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) {
      expect(n.length).toBeLessThanOrEqual(63);
      expect(n).toMatch(DNS_1035);
    }
  });

  it('starts with a letter even when the worker name starts with a digit (Service names must)', () => {
    const n = inferenceName('1st', 'AI', 'eu-west');
    expect(n).toMatch(DNS_1035);
    expect(n).toMatch(/^ai-1st-ai-eu-west-/);
    expect(n).not.toBe(inferenceName('ai-1st', 'AI', 'eu-west'));
  });

  it('survives a binding name that sanitises to nothing', () => {
    expect(inferenceName('chat', '$', 'eu')).toMatch(/^chat-eu-[0-9a-f]{8}$/);
    expect(inferenceName('chat', '$', 'eu')).not.toBe(inferenceName('chat', '_', 'eu'));
  });
});

describe('desiredInference', () => {
  it('makes one Deployment and one Service per binding and region, and refs to the Services', () => {
    const out = desiredInference(worker, [ai({ name: 'AI' }), ai({ name: 'EMBED', model: 'bge-m3', gpus: 0 })], ['us-east', 'eu-west'], opts);
    expect(out.deployments).toHaveLength(4);
    expect(out.services).toHaveLength(4);
    expect(out.deployments.map((d) => d.metadata.name)).toEqual(out.services.map((s) => s.metadata.name));
    expect(new Set(out.deployments.map((d) => d.metadata.name)).size).toBe(4);
    for (const o of [...out.deployments, ...out.services]) expect(o.metadata.namespace).toBe('team-a');
    expect(out.refs).toEqual({
      AI: {
        'eu-west': { service: inferenceName('chat', 'AI', 'eu-west'), namespace: 'team-a', port: 8000 },
        'us-east': { service: inferenceName('chat', 'AI', 'us-east'), namespace: 'team-a', port: 8000 },
      },
      EMBED: {
        'eu-west': { service: inferenceName('chat', 'EMBED', 'eu-west'), namespace: 'team-a', port: 8000 },
        'us-east': { service: inferenceName('chat', 'EMBED', 'us-east'), namespace: 'team-a', port: 8000 },
      },
    });
  });

  it('is plain JSON with apiVersion and kind, ready to send', () => {
    const { d, s } = one([ai({ name: 'AI' })]);
    expect(d.apiVersion).toBe('apps/v1');
    expect(d.kind).toBe('Deployment');
    expect(s.apiVersion).toBe('v1');
    expect(s.kind).toBe('Service');
    expect(JSON.parse(JSON.stringify(d))).toEqual(d);
    expect(Object.getPrototypeOf(d)).toBe(Object.prototype);
  });

  it('uses only fields the API knows (the client drops unknown ones silently, before Strict validation could see them)', () => {
    const { d, s } = one([ai({ name: 'AI', gpus: 2 })]);
    const strip = (o: unknown) => JSON.parse(JSON.stringify(o)) as unknown;
    expect(strip(ObjectSerializer.serialize(d, 'V1Deployment', ''))).toEqual(strip(d));
    expect(strip(ObjectSerializer.serialize(s, 'V1Service', ''))).toEqual(strip(s));
  });

  it('labels everything, and selects pods by labels that never change', () => {
    const { d, s } = one([ai({ name: 'AI' })]);
    const name = inferenceName('chat', 'AI', 'eu-west');
    const labels = {
      [APP_NAME_LABEL]: INFERENCE_APP, [APP_INSTANCE_LABEL]: name, [MANAGED_BY_LABEL]: MANAGED_BY,
      [WORKER_LABEL]: 'chat', [AI_BINDING_LABEL]: 'AI', [SERVES_REGION_LABEL]: 'eu-west',
    };
    expect(MANAGED_BY_LABEL).toBe('app.kubernetes.io/managed-by');
    expect(d.metadata.labels).toEqual(labels);
    expect(s.metadata.labels).toEqual(labels);
    expect(d.spec.template.metadata?.labels).toEqual(labels);
    const selector = { [APP_NAME_LABEL]: INFERENCE_APP, [APP_INSTANCE_LABEL]: name };
    expect(d.spec.selector.matchLabels).toEqual(selector);
    expect(s.spec.selector).toEqual(selector);
    expect(d.metadata.annotations?.[AI_BINDING_LABEL]).toBe('AI');

    // Whatever else changes, the selector (immutable on a Deployment) stays.
    const changed = one([ai({ name: 'AI', model: 'other', image: 'x/y:1', gpus: 4, replicasPerRegion: 7 })]);
    expect(changed.d.spec.selector).toEqual(d.spec.selector);
  });

  it('keeps label values valid for binding names that are not', () => {
    const out = desiredInference(worker, [ai({ name: '_$ai$' }), ai({ name: '_ai_' }), ai({ name: `${'Q'.repeat(63)}$` })], ['eu'], opts);
    const values = out.deployments.map((d) => d.metadata.labels?.[AI_BINDING_LABEL] ?? '');
    for (const v of values) {
      expect(v).toMatch(LABEL_VALUE);
      expect(v.length).toBeLessThanOrEqual(63);
    }
    expect(new Set(values).size).toBe(3);
    expect(out.deployments.map((d) => d.metadata.annotations?.[AI_BINDING_LABEL])).toEqual(['_$ai$', '_ai_', `${'Q'.repeat(63)}$`]);
  });

  it('runs on the region\'s GPU pool and tolerates the GPU taint', () => {
    const pod = one([ai({ name: 'AI' })], 'ap-south').d.spec.template.spec!;
    expect(pod.nodeSelector).toEqual({ [REGION_LABEL]: 'ap-south', [POOL_LABEL]: POOL_GPU });
    expect(pod.nodeSelector).toEqual({ 'topology.kubernetes.io/region': 'ap-south', 'edge.isolates.dev/pool': 'gpu' });
    expect(pod.tolerations).toEqual([{ key: GPU_TAINT_KEY, operator: 'Exists', effect: 'NoSchedule' }]);
    expect(pod.automountServiceAccountToken).toBe(false);
  });

  it('serves the model with vLLM-style args on port 8000 named http, image from the binding or the default', () => {
    const { d, s } = one([ai({ name: 'AI', model: 'meta-llama/Llama-3.1-8B-Instruct' })]);
    const c = container(d);
    expect(c.image).toBe(DEFAULT_INFERENCE_IMAGE);
    expect(c.args).toEqual(['--model', 'meta-llama/Llama-3.1-8B-Instruct', '--port', '8000', '--served-model-name', 'meta-llama/Llama-3.1-8B-Instruct']);
    expect(c.ports).toEqual([{ name: 'http', containerPort: 8000, protocol: 'TCP' }]);
    expect(s.spec.type).toBe('ClusterIP');
    expect(s.spec.ports).toEqual([{ name: 'http', port: 8000, targetPort: 'http', protocol: 'TCP' }]);

    expect(container(one([ai({ name: 'AI', image: 'ghcr.io/x/server:2' })]).d).image).toBe('ghcr.io/x/server:2');
    expect(container(desiredInference(worker, [ai({ name: 'AI' })], ['eu'], { defaultImage: 'chart/default:9' }).deployments[0]!).image)
      .toBe('chart/default:9');
  });

  it('asks for the binding\'s GPUs, shards across them, and asks for none when gpus is 0', () => {
    const one1 = container(one([ai({ name: 'AI', gpus: 1 })]).d);
    expect(one1.resources).toEqual({ limits: { 'nvidia.com/gpu': '1' } });
    expect(one1.args).not.toContain('--tensor-parallel-size');

    const four = container(one([ai({ name: 'AI', gpus: 4 })]).d);
    expect(four.resources?.limits?.['nvidia.com/gpu']).toBe('4');
    expect(four.args?.slice(-2)).toEqual(['--tensor-parallel-size', '4']);

    const none = container(one([ai({ name: 'AI', gpus: 0 })]).d);
    expect(none).not.toHaveProperty('resources');
  });

  it('runs replicasPerRegion replicas, one pod at a time on update (no surge pod waiting for a GPU)', () => {
    const { d } = one([ai({ name: 'AI', replicasPerRegion: 3 })]);
    expect(d.spec.replicas).toBe(3);
    expect(d.spec.strategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxSurge: 0, maxUnavailable: 1 } });
  });

  it('probes vLLM\'s /health, with a startup probe that allows for slow model loading', () => {
    const c = container(one([ai({ name: 'AI' })]).d);
    for (const p of [c.startupProbe, c.readinessProbe, c.livenessProbe]) {
      expect(p?.httpGet).toEqual({ path: '/health', port: 'http' });
    }
    const startupBudget = (c.startupProbe!.periodSeconds ?? 10) * (c.startupProbe!.failureThreshold ?? 3);
    expect(startupBudget).toBeGreaterThanOrEqual(15 * 60);
    expect(c.readinessProbe!.initialDelaySeconds).toBeGreaterThan(0);
    expect(c.readinessProbe!.periodSeconds).toBeGreaterThan(0);
  });

  it('runs unprivileged', () => {
    const { d } = one([ai({ name: 'AI' })]);
    const pod = d.spec.template.spec!;
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(pod.securityContext?.runAsUser).toBeGreaterThan(0);
    expect(container(d).securityContext).toEqual({
      runAsNonRoot: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' },
    });
    // A writable HOME for the model cache, since the user is not root.
    expect(container(d).env).toContainEqual({ name: 'HOME', value: '/cache' });
    expect(container(d).volumeMounts).toContainEqual({ name: 'cache', mountPath: '/cache' });
  });

  it('is owned by the EdgeWorker', () => {
    const { d, s } = one([ai({ name: 'AI' })]);
    const ref = {
      apiVersion: 'edge.isolates.dev/v1alpha1', kind: 'EdgeWorker', name: 'chat', uid: worker.uid,
      controller: true, blockOwnerDeletion: true,
    };
    expect(d.metadata.ownerReferences).toEqual([ref]);
    expect(s.metadata.ownerReferences).toEqual([ref]);
  });

  it('in the shared model namespace: named and labelled with the worker\'s namespace, no ownerReference, catalogue args last', () => {
    const shared = { ...opts, serverNamespace: 'edge-system' };
    const a = desiredInference(worker, [ai({ name: 'AI', args: ['--max-model-len', '8192'] })], ['eu'], shared);
    const b = desiredInference({ ...worker, namespace: 'team-b' }, [ai({ name: 'AI' })], ['eu'], shared);
    const d = a.deployments[0]!;
    expect(d.metadata.namespace).toBe('edge-system');
    expect(d.metadata.ownerReferences).toBeUndefined();
    expect(d.metadata.labels).toMatchObject({ [WORKER_LABEL]: 'chat', [WORKER_NAMESPACE_LABEL]: 'team-a' });
    expect(d.metadata.name).toMatch(/^team-a-chat-ai-eu-[0-9a-f]{8}$/);
    // The same worker and binding in another namespace is another object.
    expect(b.deployments[0]!.metadata.name).not.toBe(d.metadata.name);
    expect(a.refs.AI?.eu).toEqual({ service: d.metadata.name, namespace: 'edge-system', port: 8000 });
    expect(d.spec.template.spec?.containers[0]?.args?.slice(-2)).toEqual(['--max-model-len', '8192']);
    expect(inferenceSelector('chat', 'team-a')).toContain(`${WORKER_NAMESPACE_LABEL}=team-a`);
  });

  it('dedupes and orders regions, refuses duplicate bindings and bad names', () => {
    const out = desiredInference(worker, [ai({ name: 'AI' })], ['us-east', 'eu-west', 'us-east'], opts);
    expect(Object.keys(out.refs.AI!)).toEqual(['eu-west', 'us-east']);
    expect(out.deployments).toHaveLength(2);
    expect(() => desiredInference(worker, [ai({ name: 'AI' }), ai({ name: 'AI' })], ['eu'], opts)).toThrow(/twice/);
    expect(() => desiredInference(worker, [ai({ name: 'AI' })], ['not a region'], opts)).toThrow(/region/);
    expect(() => desiredInference({ ...worker, name: 'Bad_Name' }, [ai({ name: 'AI' })], ['eu'], opts)).toThrow(/DNS label/);
    expect(desiredInference(worker, [], ['eu'], opts)).toEqual({ deployments: [], services: [], refs: {} });
    expect(desiredInference(worker, [ai({ name: 'AI' })], [], opts)).toEqual({ deployments: [], services: [], refs: { AI: {} } });
  });

  it('carries a hash of its content that changes when anything it sets changes', () => {
    const hash = (b: ModelServerBinding) => one([b]).d.metadata.annotations?.[SPEC_HASH_ANNOTATION];
    const base = hash(ai({ name: 'AI' }));
    expect(base).toMatch(/^[0-9a-f]{16}$/);
    expect(hash(ai({ name: 'AI' }))).toBe(base);
    expect(hash(ai({ name: 'AI', gpus: 0 }))).not.toBe(base);
    expect(hash(ai({ name: 'AI', replicasPerRegion: 2 }))).not.toBe(base);
    expect(hash(ai({ name: 'AI', image: 'x/y:1' }))).not.toBe(base);
  });
});

describe('needsUpdate', () => {
  /** What the apiserver hands back: our fields plus its defaults, status and bookkeeping. */
  function asServed(d: DesiredDeployment): DesiredDeployment {
    const o = structuredClone(d);
    Object.assign(o.metadata, { uid: 'u', resourceVersion: '12', generation: 1, creationTimestamp: new Date() });
    o.metadata.annotations = { ...o.metadata.annotations, 'deployment.kubernetes.io/revision': '1' };
    Object.assign(o.spec, { revisionHistoryLimit: 10, progressDeadlineSeconds: 1800 });
    const pod = o.spec.template.spec!;
    Object.assign(pod, { restartPolicy: 'Always', dnsPolicy: 'ClusterFirst', schedulerName: 'default-scheduler', terminationGracePeriodSeconds: 30 });
    const c = pod.containers[0]!;
    Object.assign(c, { imagePullPolicy: 'IfNotPresent', terminationMessagePath: '/dev/termination-log', terminationMessagePolicy: 'File' });
    for (const p of [c.startupProbe!, c.readinessProbe!, c.livenessProbe!]) {
      Object.assign(p, { successThreshold: 1 });
      Object.assign(p.httpGet!, { scheme: 'HTTP' });
    }
    Object.assign(o, { status: { replicas: 1, readyReplicas: 1 } });
    return o;
  }

  it('ignores server defaults and bookkeeping', () => {
    const { d } = one([ai({ name: 'AI' })]);
    expect(needsUpdate(d, asServed(d))).toBe(false);
  });

  it('sees a changed field, someone else\'s edit, and a field the operator stopped setting', () => {
    const { d } = one([ai({ name: 'AI', gpus: 1 })]);
    const served = asServed(d);

    expect(needsUpdate(one([ai({ name: 'AI', gpus: 1, replicasPerRegion: 2 })]).d, served)).toBe(true);

    const scaled = structuredClone(served);
    scaled.spec.replicas = 5;
    expect(needsUpdate(d, scaled)).toBe(true);

    const relabelled = structuredClone(served);
    delete relabelled.metadata.labels![WORKER_LABEL];
    expect(needsUpdate(d, relabelled)).toBe(true);

    // gpus 1 -> 0: the desired object has no limits at all, which field comparison alone
    // would call "contained"; the hash sees it.
    const noGpu = one([ai({ name: 'AI', gpus: 0 })]).d;
    expect(needsUpdate(noGpu, served)).toBe(true);
  });

  it('ignores labels and annotations others add', () => {
    const { s } = one([ai({ name: 'AI' })]);
    const served = structuredClone(s);
    served.metadata.labels = { ...served.metadata.labels, team: 'x' };
    served.metadata.annotations = { ...served.metadata.annotations, note: 'y' };
    Object.assign(served.spec, { clusterIP: '10.0.0.7', clusterIPs: ['10.0.0.7'], sessionAffinity: 'None' });
    expect(needsUpdate(s, served)).toBe(false);
  });
});

describe('inferenceSelector', () => {
  it('selects the worker\'s inference objects and nothing else the operator made for it', () => {
    expect(inferenceSelector('chat')).toBe(
      'edge.isolates.dev/worker=chat,app.kubernetes.io/managed-by=edge-isolates,app.kubernetes.io/name=edge-inference',
    );
  });
});
