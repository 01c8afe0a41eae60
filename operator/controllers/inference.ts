import { createHash } from 'node:crypto';
import {
  ApiException, AppsV1Api, CoreV1Api,
  type KubeConfig, type V1Deployment, type V1DeploymentSpec, type V1ObjectMeta, type V1Service, type V1ServiceSpec,
} from '@kubernetes/client-node';
import { EdgeError } from '../../common/errors.js';
import { isDnsLabel } from '../../common/keys.js';
import { API_VERSION, type AiBinding, type AiTaskType } from '../../common/api/index.js';
import {
  AI_BINDING_LABEL, APP_INSTANCE_LABEL, APP_NAME_LABEL, GPU_TAINT_KEY, INFERENCE_APP, MANAGED_BY, MANAGED_BY_LABEL,
  POOL_GPU, POOL_LABEL, REGION_LABEL, SERVES_REGION_LABEL, SPEC_HASH_ANNOTATION, WORKER_LABEL, WORKER_NAMESPACE_LABEL,
} from '../../common/labels.js';
import type { AiServiceRef } from '../../common/resolve-bindings.js';
import { HASH_CHARS, INFERENCE_PORT, modelServerRef, shortHash } from '../../common/model-servers.js';

// GPU inference for a worker's `ai` bindings: for each binding and each region the worker is
// placed in, one Deployment of a model server (vLLM's OpenAI-compatible server by default) on
// that region's GPU pool and one ClusterIP Service in front of it.
//
// desiredInference() is pure: it says what should exist. reconcileInference() makes the
// namespace match it (create, update, delete), level-triggered and idempotent: a second call
// with the same input makes no writes, concurrent calls converge without failing.
//
// How "differs" is decided: each object carries a hash of everything the operator sets
// (SPEC_HASH_ANNOTATION), and the fields the operator sets are compared with what the
// apiserver returns, ignoring fields it defaulted. The hash sees the operator's own changes,
// removals included (a binding going from 1 GPU to 0 drops the limit); the field comparison
// sees someone else's edits (a hand `kubectl scale`) and puts them back.

export type { AiBinding };

/**
 * One ai binding's model server as the operator runs it: the binding's name, model and
 * replicas, the catalogue's image, GPUs and extra args (operator/controllers/models.ts).
 */
export interface ModelServerBinding {
  /** The server's key among the worker's (aiServerKey): the binding's name, or <binding>/<model>. */
  name: string;
  model: string;
  /** The catalogue's task type: published with the Service so the agents know what run() does. Unset: text-generation. */
  task?: AiTaskType;
  /** The weights to load (--model); unset: model. */
  source?: string;
  /** Unset: opts.defaultImage. */
  image?: string;
  gpus: number;
  replicasPerRegion: number;
  /** After the arguments the operator sets. */
  args?: readonly string[];
}

/** The image when a binding names none; the chart passes its own value as opts.defaultImage. */
export const DEFAULT_INFERENCE_IMAGE = 'vllm/vllm-openai:v0.11.0';
/** Who the writes are attributed to in managedFields. */
export const FIELD_MANAGER = 'edge-isolates';

const CONTAINER = 'server';

export interface InferenceWorker { name: string; namespace: string; uid: string }
export interface InferenceOptions {
  defaultImage: string;
  /**
   * The one namespace every tenant's model servers live in (the operator's --model-namespace),
   * so the operator needs write access there only, and tenants none. Unset: each worker's
   * own namespace, with an ownerReference to it.
   */
  serverNamespace?: string;
}
export type InferenceRef = AiServiceRef;
/** binding name -> region -> value. */
export type PerBindingRegion<T> = Record<string, Record<string, T>>;

export type DesiredDeployment = V1Deployment & {
  apiVersion: 'apps/v1'; kind: 'Deployment';
  metadata: V1ObjectMeta & { name: string; namespace: string };
  spec: V1DeploymentSpec;
};
export type DesiredService = V1Service & {
  apiVersion: 'v1'; kind: 'Service';
  metadata: V1ObjectMeta & { name: string; namespace: string };
  spec: V1ServiceSpec;
};

/** The input cannot describe valid objects (a name that is no DNS label, a binding twice): no retry fixes it. */
export class InvalidInference extends EdgeError {}

/** A worker's model servers as the EdgeWorker reconciler drives them; fake/inference.ts records the calls. */
export interface Inference {
  reconcile(worker: InferenceWorker, bindings: readonly ModelServerBinding[], regions: readonly string[], opts: InferenceOptions): Promise<InferenceResult>;
  delete(worker: { name: string; namespace: string; uid?: string }): Promise<{ deleted: string[] }>;
}

/** The Inference of a real cluster: Deployments and Services through the apiserver. */
export function clusterInference(kc: KubeConfig, serverNamespace?: string): Inference {
  const where = serverNamespace === undefined ? {} : { serverNamespace };
  return {
    reconcile: (worker, bindings, regions, opts) => reconcileInference(kc, worker, bindings, regions, { ...opts, ...where }),
    delete: (worker) => deleteInference(kc, worker, serverNamespace),
  };
}

export interface DesiredInference {
  deployments: DesiredDeployment[];
  services: DesiredService[];
  refs: PerBindingRegion<InferenceRef>;
}

export interface InferenceResult {
  /** `deployment/<name>` and `service/<name>`, sorted. */
  created: string[];
  updated: string[];
  deleted: string[];
  refs: PerBindingRegion<InferenceRef>;
  /** readyReplicas from the Deployment's status; replicas is the desired count (replicasPerRegion). */
  ready: PerBindingRegion<{ readyReplicas: number; replicas: number }>;
}

// ---------------------------------------------------------------------------------------
// Names and labels

const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** A label value for a name that may not be one (binding names may hold '$' or start with '_'). */
function labelValue(s: string): string {
  if (s.length <= 63 && LABEL_VALUE.test(s)) return s;
  const base = s.replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 63 - 1 - HASH_CHARS)
    .replace(/[^A-Za-z0-9]+$/, '');
  return base === '' ? `b${shortHash(s)}` : `${base}-${shortHash(s)}`;
}

function selectorLabels(name: string): Record<string, string> {
  return { [APP_NAME_LABEL]: INFERENCE_APP, [APP_INSTANCE_LABEL]: name };
}

/**
 * The label selector that lists every inference object of a worker (and nothing else of it);
 * in a shared namespace the worker's namespace is part of it.
 */
export function inferenceSelector(workerName: string, workerNamespace?: string): string {
  const ns = workerNamespace === undefined ? '' : `,${WORKER_NAMESPACE_LABEL}=${workerNamespace}`;
  return `${WORKER_LABEL}=${workerName}${ns},${MANAGED_BY_LABEL}=${MANAGED_BY},${APP_NAME_LABEL}=${INFERENCE_APP}`;
}

// ---------------------------------------------------------------------------------------
// Desired state (pure)

/** Everything that should exist for these bindings in these regions, as plain API objects. */
export function desiredInference(
  worker: InferenceWorker, bindings: readonly ModelServerBinding[], regions: readonly string[], opts: InferenceOptions,
): DesiredInference {
  if (!isDnsLabel(worker.name)) {
    throw new InvalidInference(`worker name ${JSON.stringify(worker.name)} is not a DNS label`);
  }
  for (const r of regions) {
    if (r === '' || r.length > 63 || !LABEL_VALUE.test(r)) throw new InvalidInference(`region ${JSON.stringify(r)} is not a label value`);
  }
  const seen = new Set<string>();
  for (const b of bindings) {
    if (seen.has(b.name)) throw new InvalidInference(`ai binding ${JSON.stringify(b.name)} appears twice`);
    seen.add(b.name);
  }
  const uniqueRegions = [...new Set(regions)].sort();
  const shared = opts.serverNamespace;
  const out: DesiredInference = { deployments: [], services: [], refs: {} };
  for (const b of bindings) {
    const refs: Record<string, InferenceRef> = {};
    out.refs[b.name] = refs;
    for (const region of uniqueRegions) {
      const ref = modelServerRef(worker.namespace, worker.name, b.name, region, shared);
      out.deployments.push(withHash(deployment(worker, b, region, ref.service, opts)));
      out.services.push(withHash(service(worker, b, region, ref.service, opts)));
      refs[region] = b.task && b.task !== 'text-generation' ? { ...ref, task: b.task } : ref;
    }
  }
  return out;
}

function metadata(worker: InferenceWorker, b: ModelServerBinding, region: string, name: string, opts: InferenceOptions) {
  const shared = opts.serverNamespace !== undefined;
  return {
    name,
    namespace: opts.serverNamespace ?? worker.namespace,
    labels: {
      ...selectorLabels(name),
      [MANAGED_BY_LABEL]: MANAGED_BY,
      [WORKER_LABEL]: worker.name,
      ...(shared ? { [WORKER_NAMESPACE_LABEL]: worker.namespace } : {}),
      [AI_BINDING_LABEL]: labelValue(b.name),
      [SERVES_REGION_LABEL]: region,
    },
    annotations: { [AI_BINDING_LABEL]: b.name },
    // An ownerReference cannot cross namespaces: in the shared namespace the EdgeWorker's
    // finalizer deletes its model servers (it does in both cases; the reference is for the
    // garbage collector when the finalizer was removed by hand).
    ...(shared ? {} : {
      ownerReferences: [{
        apiVersion: API_VERSION, kind: 'EdgeWorker', name: worker.name, uid: worker.uid,
        controller: true, blockOwnerDeletion: true,
      }],
    }),
  };
}

function serverArgs(b: ModelServerBinding): string[] {
  const args = ['--model', b.source ?? b.model, '--port', String(INFERENCE_PORT), '--served-model-name', b.model];
  if (b.gpus > 1) args.push('--tensor-parallel-size', String(b.gpus));
  return [...args, ...(b.args ?? [])];
}

const healthCheck = () => ({ httpGet: { path: '/health', port: 'http' } });

function deployment(
  worker: InferenceWorker, b: ModelServerBinding, region: string, name: string, opts: InferenceOptions,
): DesiredDeployment {
  const meta = metadata(worker, b, region, name, opts);
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta,
    spec: {
      replicas: b.replicasPerRegion,
      selector: { matchLabels: selectorLabels(name) },
      // A surge pod needs a GPU the pool may not have, which would stall the rollout forever:
      // replace one pod at a time instead.
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 0, maxUnavailable: 1 } },
      // Pulling weights and loading them can take many minutes.
      progressDeadlineSeconds: 1800,
      template: {
        metadata: { labels: { ...meta.labels }, annotations: { ...meta.annotations } },
        spec: {
          nodeSelector: { [REGION_LABEL]: region, [POOL_LABEL]: POOL_GPU },
          tolerations: [{ key: GPU_TAINT_KEY, operator: 'Exists', effect: 'NoSchedule' }],
          // The model server has no business with the Kubernetes API.
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          securityContext: {
            runAsNonRoot: true,
            // The vLLM image's user is root; run it as an ordinary user with a writable HOME.
            runAsUser: 1000,
            runAsGroup: 1000,
            fsGroup: 1000,
            seccompProfile: { type: 'RuntimeDefault' },
          },
          containers: [{
            name: CONTAINER,
            image: b.image ?? opts.defaultImage,
            args: serverArgs(b),
            env: [
              { name: 'HOME', value: '/cache' },
              { name: 'HF_HOME', value: '/cache/huggingface' },
            ],
            ports: [{ name: 'http', containerPort: INFERENCE_PORT, protocol: 'TCP' }],
            ...(b.gpus > 0 ? { resources: { limits: { [GPU_TAINT_KEY]: String(b.gpus) } } } : {}),
            // Up to 30 minutes to download and load the weights before the other probes start.
            startupProbe: { ...healthCheck(), periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 180 },
            readinessProbe: { ...healthCheck(), initialDelaySeconds: 15, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 3 },
            livenessProbe: { ...healthCheck(), periodSeconds: 30, timeoutSeconds: 10, failureThreshold: 3 },
            securityContext: {
              runAsNonRoot: true,
              allowPrivilegeEscalation: false,
              capabilities: { drop: ['ALL'] },
              seccompProfile: { type: 'RuntimeDefault' },
            },
            volumeMounts: [
              { name: 'cache', mountPath: '/cache' },
              { name: 'dshm', mountPath: '/dev/shm' },
            ],
          }],
          volumes: [
            { name: 'cache', emptyDir: {} },
            // Tensor-parallel workers talk through shared memory; the default 64 MiB is too small.
            { name: 'dshm', emptyDir: { medium: 'Memory', sizeLimit: '2Gi' } },
          ],
        },
      },
    },
  };
}

function service(worker: InferenceWorker, b: ModelServerBinding, region: string, name: string, opts: InferenceOptions): DesiredService {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata(worker, b, region, name, opts),
    spec: {
      type: 'ClusterIP',
      selector: selectorLabels(name),
      ports: [{ name: 'http', port: INFERENCE_PORT, targetPort: 'http', protocol: 'TCP' }],
    },
  };
}

/** JSON with object keys sorted, so the hash depends on content only. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonical(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

function withHash<T extends DesiredDeployment | DesiredService>(obj: T): T {
  const hash = createHash('sha256').update(canonical({ metadata: obj.metadata, spec: obj.spec })).digest('hex').slice(0, 16);
  obj.metadata.annotations = { ...obj.metadata.annotations, [SPEC_HASH_ANNOTATION]: hash };
  return obj;
}

// ---------------------------------------------------------------------------------------
// Comparing desired with what the apiserver has

/**
 * Whether every field set in `want` has the same value in `have`. Fields only `have` holds
 * (server defaults: clusterIP, strategy details, terminationMessagePath...) are ignored;
 * arrays must have the same length and match element by element.
 */
function contains(want: unknown, have: unknown): boolean {
  if (Array.isArray(want)) {
    return Array.isArray(have) && have.length === want.length && want.every((w, i) => contains(w, have[i]));
  }
  if (want !== null && typeof want === 'object') {
    if (have === null || typeof have !== 'object' || Array.isArray(have)) return false;
    const h = have as Record<string, unknown>;
    return Object.entries(want as Record<string, unknown>).every(([k, w]) => w === undefined || contains(w, h[k]));
  }
  return want === have;
}

/**
 * Whether `actual` (as read from the apiserver) must be rewritten to match `desired`: a field
 * the operator sets differs, or the spec hash says the operator's desired object changed.
 */
export function needsUpdate(desired: DesiredDeployment | DesiredService, actual: V1Deployment | V1Service): boolean {
  const m = desired.metadata;
  return !contains(
    { metadata: { labels: m.labels, annotations: m.annotations, ownerReferences: m.ownerReferences }, spec: desired.spec },
    actual,
  );
}

// ---------------------------------------------------------------------------------------
// Talking to the apiserver

type Obj = V1Deployment | V1Service;

interface Client<D extends DesiredDeployment | DesiredService, A extends Obj> {
  prefix: 'deployment' | 'service';
  list(namespace: string, labelSelector: string): Promise<A[]>;
  read(namespace: string, name: string): Promise<A>;
  create(namespace: string, body: D): Promise<A>;
  replace(namespace: string, name: string, body: A): Promise<A>;
  remove(namespace: string, name: string, uid?: string): Promise<void>;
}

const WRITE = { fieldManager: FIELD_MANAGER, fieldValidation: 'Strict' } as const;
const deleteBody = (uid?: string) => (uid ? { preconditions: { uid } } : {});

function deploymentClient(kc: KubeConfig): Client<DesiredDeployment, V1Deployment> {
  const api = kc.makeApiClient(AppsV1Api);
  return {
    prefix: 'deployment',
    list: async (namespace, labelSelector) => (await api.listNamespacedDeployment({ namespace, labelSelector })).items,
    read: (namespace, name) => api.readNamespacedDeployment({ namespace, name }),
    create: (namespace, body) => api.createNamespacedDeployment({ namespace, body, ...WRITE }),
    replace: (namespace, name, body) => api.replaceNamespacedDeployment({ namespace, name, body, ...WRITE }),
    remove: async (namespace, name, uid) => {
      // Background: on a real cluster the garbage collector then removes ReplicaSets and pods.
      // (Foreground would leave the Deployment waiting on a collector that tests don't run.)
      await api.deleteNamespacedDeployment({ namespace, name, propagationPolicy: 'Background', body: deleteBody(uid) });
    },
  };
}

function serviceClient(kc: KubeConfig): Client<DesiredService, V1Service> {
  const api = kc.makeApiClient(CoreV1Api);
  return {
    prefix: 'service',
    list: async (namespace, labelSelector) => (await api.listNamespacedService({ namespace, labelSelector })).items,
    read: (namespace, name) => api.readNamespacedService({ namespace, name }),
    create: (namespace, body) => api.createNamespacedService({ namespace, body, ...WRITE }),
    replace: (namespace, name, body) => api.replaceNamespacedService({ namespace, name, body, ...WRITE }),
    remove: async (namespace, name, uid) => {
      await api.deleteNamespacedService({ namespace, name, propagationPolicy: 'Background', body: deleteBody(uid) });
    },
  };
}

const status = (err: unknown): number | undefined => (err instanceof ApiException ? err.code : undefined);

/**
 * Ours: carries our labels (in a shared namespace, the worker's namespace among them), or
 * names this worker as its controlling owner (labels edited away).
 */
function isOurs(obj: Obj, worker: InferenceWorker, shared: boolean): boolean {
  const l = obj.metadata?.labels ?? {};
  if (l[WORKER_LABEL] === worker.name && l[MANAGED_BY_LABEL] === MANAGED_BY && l[APP_NAME_LABEL] === INFERENCE_APP
    && (!shared || l[WORKER_NAMESPACE_LABEL] === worker.namespace)) return true;
  return !shared && (obj.metadata?.ownerReferences ?? []).some((r) => r.controller === true && r.uid === worker.uid && r.kind === 'EdgeWorker');
}

/**
 * The body of a replace: `actual` with the desired metadata and spec laid over it. Labels and
 * annotations others added stay; top-level spec fields the operator does not set (clusterIP,
 * revisionHistoryLimit...) stay; what it sets (the whole pod template) is replaced.
 */
function merged<D extends DesiredDeployment | DesiredService, A extends Obj>(desired: D, actual: A): A {
  const am = actual.metadata ?? {};
  return {
    apiVersion: desired.apiVersion,
    kind: desired.kind,
    metadata: {
      ...desired.metadata,
      resourceVersion: am.resourceVersion,
      labels: { ...am.labels, ...desired.metadata.labels },
      annotations: { ...am.annotations, ...desired.metadata.annotations },
      finalizers: am.finalizers,
    },
    spec: { ...actual.spec, ...desired.spec },
  } as A;
}

const MAX_CONFLICTS = 5;

interface Outcome<A> { op: 'created' | 'updated' | 'unchanged' | 'deleting'; obj: A }

/** Makes one object match `desired`, given what the list returned for its name (if anything). */
async function ensure<D extends DesiredDeployment | DesiredService, A extends Obj>(
  c: Client<D, A>, desired: D, listed: A | undefined, worker: InferenceWorker, shared: boolean,
): Promise<Outcome<A>> {
  const { namespace, name } = desired.metadata;
  const reread = () => c.read(namespace, name).catch((err: unknown) => {
    if (status(err) === 404) return undefined;
    throw err;
  });
  let actual = listed;
  for (let attempt = 0; ; attempt++) {
    if (attempt > MAX_CONFLICTS) throw new Error(`${c.prefix} ${namespace}/${name}: still conflicting after ${MAX_CONFLICTS} retries`);
    if (!actual) {
      try {
        return { op: 'created', obj: await c.create(namespace, desired) };
      } catch (err) {
        if (status(err) !== 409) throw err;
        // AlreadyExists: a concurrent reconcile (or a stale list) got there first.
        actual = await reread();
        continue;
      }
    }
    if (!isOurs(actual, worker, shared)) {
      throw new Error(`${c.prefix} ${namespace}/${name} exists but is not an inference object of EdgeWorker ${worker.name}; not touching it`);
    }
    if (actual.metadata?.deletionTimestamp) return { op: 'deleting', obj: actual };
    if (!needsUpdate(desired, actual)) return { op: 'unchanged', obj: actual };
    if (c.prefix === 'deployment' && !sameSelector(desired as DesiredDeployment, actual as V1Deployment)) {
      // Selectors are immutable: only a delete and a fresh create can change one.
      await c.remove(namespace, name, actual.metadata?.uid).catch((err: unknown) => {
        if (status(err) !== 404 && status(err) !== 409) throw err;
      });
      actual = undefined;
      continue;
    }
    try {
      return { op: 'updated', obj: await c.replace(namespace, name, merged(desired, actual)) };
    } catch (err) {
      // Conflict: someone wrote it since we read it. NotFound: deleted meanwhile. Read and retry.
      const code = status(err);
      if (code !== 409 && code !== 404) throw err;
      actual = await reread();
    }
  }
}

function sameSelector(desired: DesiredDeployment, actual: V1Deployment): boolean {
  const a = actual.spec?.selector;
  return canonical({ l: desired.spec.selector.matchLabels, e: desired.spec.selector.matchExpressions ?? [] })
    === canonical({ l: a?.matchLabels, e: a?.matchExpressions ?? [] });
}

async function removeAll<A extends Obj>(c: Client<DesiredDeployment | DesiredService, A>, objs: A[]): Promise<string[]> {
  const done = await Promise.all(objs.map(async (o) => {
    const name = o.metadata?.name ?? '';
    if (o.metadata?.deletionTimestamp) return undefined;
    try {
      await c.remove(o.metadata?.namespace ?? '', name, o.metadata?.uid);
      return `${c.prefix}/${name}`;
    } catch (err) {
      // Gone already, or replaced by a new object of the same name (uid precondition).
      if (status(err) === 404 || status(err) === 409) return undefined;
      throw err;
    }
  }));
  return done.filter((n): n is string => n !== undefined);
}

async function settle<T>(work: Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(work);
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length > 0) {
    const first = failed[0]!.reason as unknown;
    const msg = failed.map((f) => (f.reason instanceof Error ? f.reason.message : String(f.reason))).join('; ');
    throw new Error(`inference reconcile: ${failed.length} operation(s) failed: ${msg}`, { cause: first });
  }
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

/**
 * Makes the worker's namespace hold exactly the inference Deployments and Services that
 * desiredInference() describes: creates what is missing, rewrites what differs, deletes what
 * is no longer wanted (a binding removed, a region dropped). Safe to call again at any time
 * and concurrently; when nothing differs it makes no writes. Throws (after doing everything
 * it could) when an operation failed; the caller retries.
 */
export async function reconcileInference(
  kc: KubeConfig, worker: InferenceWorker, bindings: readonly ModelServerBinding[], regions: readonly string[], opts: InferenceOptions,
): Promise<InferenceResult> {
  const want = desiredInference(worker, bindings, regions, opts);
  const deployments = deploymentClient(kc);
  const services = serviceClient(kc);
  const shared = opts.serverNamespace !== undefined;
  const ns = opts.serverNamespace ?? worker.namespace;
  const selector = inferenceSelector(worker.name, shared ? worker.namespace : undefined);
  const [haveDeployments, haveServices] = await Promise.all([
    deployments.list(ns, selector), services.list(ns, selector),
  ]);
  const byName = <A extends Obj>(objs: A[]) => new Map(objs.map((o) => [o.metadata?.name ?? '', o]));
  const dMap = byName(haveDeployments);
  const sMap = byName(haveServices);
  const wantNames = new Set(want.deployments.map((d) => d.metadata.name));

  const [dOut, sOut, deletedD, deletedS] = await Promise.all([
    settle(want.deployments.map((d) => ensure(deployments, d, dMap.get(d.metadata.name), worker, shared))),
    settle(want.services.map((s) => ensure(services, s, sMap.get(s.metadata.name), worker, shared))),
    removeAll(deployments, haveDeployments.filter((o) => !wantNames.has(o.metadata?.name ?? ''))),
    removeAll(services, haveServices.filter((o) => !wantNames.has(o.metadata?.name ?? ''))),
  ]);

  const result: InferenceResult = { created: [], updated: [], deleted: [...deletedD, ...deletedS].sort(), refs: want.refs, ready: {} };
  const record = (prefix: string, outs: Outcome<Obj>[]) => {
    for (const o of outs) {
      const id = `${prefix}/${o.obj.metadata?.name ?? ''}`;
      if (o.op === 'created') result.created.push(id);
      else if (o.op === 'updated') result.updated.push(id);
    }
  };
  record('deployment', dOut);
  record('service', sOut);
  result.created.sort();
  result.updated.sort();

  // Readiness, by binding and region, from the Deployments as last seen.
  const seenDeployment = new Map(dOut.map((o) => [o.obj.metadata?.name ?? '', o]));
  for (const b of bindings) {
    const perRegion: Record<string, { readyReplicas: number; replicas: number }> = {};
    result.ready[b.name] = perRegion;
    for (const [region, ref] of Object.entries(want.refs[b.name] ?? {})) {
      const d = seenDeployment.get(ref.service);
      const ready = !d || d.op === 'deleting' ? 0 : (d.obj as V1Deployment).status?.readyReplicas ?? 0;
      perRegion[region] = { readyReplicas: ready, replicas: b.replicasPerRegion };
    }
  }
  return result;
}

/**
 * Deletes every inference Deployment and Service of the worker (the finalizer path: the test
 * harness runs no garbage collector, and a real cluster's would only act once the EdgeWorker
 * itself is gone). Deletes by worker name (the uid, if given, is not needed). Returns what it
 * deleted; calling it again is a no-op.
 */
export async function deleteInference(
  kc: KubeConfig, worker: { name: string; namespace: string; uid?: string }, serverNamespace?: string,
): Promise<{ deleted: string[] }> {
  const deployments = deploymentClient(kc);
  const services = serviceClient(kc);
  const ns = serverNamespace ?? worker.namespace;
  const selector = inferenceSelector(worker.name, serverNamespace === undefined ? undefined : worker.namespace);
  const [d, s] = await Promise.all([deployments.list(ns, selector), services.list(ns, selector)]);
  const [dd, ds] = await Promise.all([removeAll(deployments, d), removeAll(services, s)]);
  return { deleted: [...dd, ...ds].sort() };
}
