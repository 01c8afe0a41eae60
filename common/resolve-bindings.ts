import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
// The modules, not api/index.js: an agent's isolate host needs these schemas and not the
// CRDs' (api/crd.ts, api/durableactor.ts), which index.js would build in it too.
import { BUILTIN_LIMIT_DEFAULTS, MAX_SOURCE_BYTES, type AiBinding, type EdgeWorkerSpec, type Limits } from './api/edgeworker.js';
import type { EgressPolicy } from './api/policy.js';
import { EdgeError } from './errors.js';
import type { WorkerConfig } from './nats.js';
import { ConditionReasons } from './reasons.js';
import { secretAad, SealedValueError, type SecretSealer } from './sealing.js';

// The one path from an EdgeWorker's spec to what its isolates are given: the module source
// (inline or from a ConfigMap) and env (vars, Secret values, DurableActor uids, model-server
// Services). The operator resolves against the apiserver and publishes the result to NATS;
// `edge agent --workers DIR` resolves against the manifests in DIR. Both hand this code a
// BindingLookup, so a binding kind cannot be served in one mode and dropped in the other.

/** Env as the operator publishes it (WorkerConfig.env): secret values sealed. */
export type PublishedEnv = WorkerConfig['env'];
/** Resolved env in clear, as the agents turn it into isolate env: vars in text, Secret values in secrets. */
export type ResolvedEnv = Omit<PublishedEnv, 'sealed'> & { secrets: Record<string, string> };
/** Where one ai binding's model server is reached in one region. */
export type AiServiceRef = ResolvedEnv['ai'][string]['services'][string];

/**
 * The key of one model server of a worker among its ai bindings' servers: the binding's name
 * for its `model` (the one server a binding had before it could list more: unchanged names),
 * `<binding>/<model>` for each model of its `models`. The key names the Deployment and
 * Service (inferenceName) and the refs the operator publishes.
 */
export function aiServerKey(binding: string, model: string, primary: boolean): string {
  return primary ? binding : `${binding}/${model}`;
}

/** The Ready=False reasons a spec that cannot be resolved gets. */
export const RESOLVE_REASONS = {
  SourceNotFound: ConditionReasons.SourceNotFound,
  BundleInvalid: ConditionReasons.BundleInvalid,
  SecretNotFound: ConditionReasons.SecretNotFound,
  ActorNotFound: ConditionReasons.ActorNotFound,
} as const;
export type ResolveReason = (typeof RESOLVE_REASONS)[keyof typeof RESOLVE_REASONS];

/** A reference in the spec names something that is not there; the message starts with the field. */
export class BindingResolutionError extends EdgeError {
  constructor(
    readonly reason: ResolveReason,
    /** The spec field holding the reference, e.g. `spec.bindings.secrets`. */
    readonly field: string,
    /** The binding's name (env.<binding>), for binding lists. */
    readonly binding: string | undefined,
    what: string,
  ) {
    super(`${field}${binding === undefined ? '' : ` ${binding}`}: ${what}`, binding === undefined ? {} : { context: { binding } });
  }
}

/**
 * What the resolver asks of the world. Objects live in the EdgeWorker's namespace;
 * undefined means "not there". Only aiServices may have effects (the operator creates the
 * model servers it names): it is asked once per resolve, with every ai binding of the spec,
 * even none, so it can also remove what no binding needs any more.
 */
export interface BindingLookup {
  /** A ConfigMap's data and binaryData (decoded from base64). */
  configMap(namespace: string, name: string): Promise<ConfigMapContent | undefined>;
  /** A Secret's values, decoded (not base64). */
  secret(namespace: string, name: string): Promise<Record<string, string> | undefined>;
  /** A DurableActor's metadata.uid: the key its actor ids are made with. */
  durableActorUid(namespace: string, name: string): Promise<string | undefined>;
  /** server key (aiServerKey: a binding's name, or <binding>/<model> for its other models) -> region -> the Service of that region's model server. */
  aiServices(namespace: string, worker: string, bindings: readonly AiBinding[]): Promise<Record<string, Record<string, AiServiceRef>>>;
}

export interface ConfigMapContent {
  data: Record<string, string>;
  binaryData: Record<string, Uint8Array>;
}

/** A ConfigMap's `binaryData` (base64 values, as the apiserver and manifests write them) decoded. */
export function decodeBinaryData(binaryData: Record<string, string> | undefined): Record<string, Uint8Array> {
  return Object.fromEntries(Object.entries(binaryData ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
}

/** The ConfigMap key suffix of a gzip-compressed source (in binaryData): decompressed when resolved. */
export const GZIP_KEY_SUFFIX = '.gz';

const gunzipAsync = promisify(gunzip);

export interface ResolvedWorker {
  source: string;
  env: ResolvedEnv;
}

/** The module source: inline, or one key of a ConfigMap. */
export async function resolveSource(namespace: string, spec: EdgeWorkerSpec, lookup: BindingLookup): Promise<string> {
  const src = spec.source;
  if (src.inline !== undefined) return src.inline;
  const ref = src.configMapRef;
  // The CRD's CEL rule makes this unreachable in a cluster; a manifest in a directory is not validated by it.
  if (!ref) throw new BindingResolutionError(RESOLVE_REASONS.SourceNotFound, 'spec.source', undefined, 'neither inline nor configMapRef is set');
  const cm = await lookup.configMap(namespace, ref.name);
  const where = `ConfigMap ${namespace}/${ref.name} key "${ref.key}"`;
  const text = cm?.data[ref.key];
  if (text !== undefined) return text;
  const bytes = cm?.binaryData[ref.key];
  if (bytes === undefined) {
    throw new BindingResolutionError(RESOLVE_REASONS.SourceNotFound, 'spec.source.configMapRef', undefined, cm
      ? `ConfigMap ${namespace}/${ref.name} has no key "${ref.key}"`
      : `ConfigMap ${namespace}/${ref.name} not found`);
  }
  const invalid = (what: string) => new BindingResolutionError(RESOLVE_REASONS.BundleInvalid, 'spec.source.configMapRef', undefined, `${where}: ${what}`);
  let source: Uint8Array = bytes;
  if (ref.key.endsWith(GZIP_KEY_SUFFIX)) {
    try {
      // The cap stops zlib as it passes it: a bomb costs MAX_SOURCE_BYTES of memory, no more.
      source = await gunzipAsync(bytes, { maxOutputLength: MAX_SOURCE_BYTES });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw invalid(`decompresses to more than ${MAX_SOURCE_BYTES} bytes`);
      throw invalid(`is not gzip data (${(err as Error).message})`);
    }
  } else if (bytes.byteLength > MAX_SOURCE_BYTES) {
    throw invalid(`is ${bytes.byteLength} bytes, more than ${MAX_SOURCE_BYTES}`);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(source);
  } catch {
    throw invalid('is not UTF-8 text');
  }
}

/**
 * Every binding of the spec, in the order secrets, ai, actors (model servers take minutes
 * to start, so the operator asks for them before it waits on a DurableActor).
 */
export async function resolveEnv(namespace: string, worker: string, spec: EdgeWorkerSpec, lookup: BindingLookup): Promise<ResolvedEnv> {
  const bindings = spec.bindings ?? {};
  const text: Record<string, string> = { ...bindings.vars };
  const secrets: Record<string, string> = {};
  for (const s of bindings.secrets ?? []) {
    const { name, key } = s.secretKeyRef;
    const secret = await lookup.secret(namespace, name);
    const value = secret?.[key];
    if (value === undefined) {
      throw new BindingResolutionError(RESOLVE_REASONS.SecretNotFound, 'spec.bindings.secrets', s.name, secret
        ? `Secret ${namespace}/${name} has no key "${key}"`
        : `Secret ${namespace}/${name} not found`);
    }
    secrets[s.name] = value;
    // A secret binding wins over a var of the same name, as it did when both were text.
    delete text[s.name];
  }

  const aiBindings = bindings.ai ?? [];
  const services = await lookup.aiServices(namespace, worker, aiBindings);
  // A binding without a Service in some region is still published: the agents there fail its calls with a clear error.
  // The services come keyed by aiServerKey: the binding's name for its model, <binding>/<model> for the others.
  const ai: ResolvedEnv['ai'] = Object.fromEntries(aiBindings.map((b) => {
    const others = (b.models ?? []).filter((m) => m !== b.model);
    return [b.name, {
      model: b.model, services: services[aiServerKey(b.name, b.model, true)] ?? {},
      ...(others.length > 0 ? { models: Object.fromEntries(others.map((m) => [m, services[aiServerKey(b.name, m, false)] ?? {}])) } : {}),
    }];
  }));

  const actors: ResolvedEnv['actors'] = {};
  for (const b of bindings.actors ?? []) {
    const uid = await lookup.durableActorUid(namespace, b.actor);
    if (!uid) throw new BindingResolutionError(RESOLVE_REASONS.ActorNotFound, 'spec.bindings.actors', b.name, `DurableActor ${namespace}/${b.actor} not found`);
    actors[b.name] = { namespace, actor: b.actor, uid };
  }
  // Service bindings name a worker of this namespace only (the schema allows no other): the
  // target is resolved when called, on the agent, so a chain of workers deploys in any order.
  const serviceBindings = bindings.services ?? [];
  // A Worker Loader needs nothing resolved: its dynamic workers run on the caller's agent.
  const loaders = (bindings.workerLoaders ?? []).map((b) => b.name);
  const withLoaders = loaders.length > 0 ? { workerLoaders: loaders } : {};
  if (serviceBindings.length === 0) return { text, secrets, actors, ai, ...withLoaders };
  const serviceTargets: NonNullable<ResolvedEnv['services']> = {};
  for (const b of serviceBindings) serviceTargets[b.name] = { namespace, worker: b.worker, ...(b.entrypoint ? { entrypoint: b.entrypoint } : {}) };
  return { text, secrets, actors, ai, services: serviceTargets, ...withLoaders };
}

/** The operator's step before publishing: each Secret value sealed to the agents. */
export function sealEnv(env: ResolvedEnv, namespace: string, worker: string, sealer: SecretSealer): PublishedEnv {
  const { secrets, ...rest } = env;
  const sealed = Object.fromEntries(Object.entries(secrets).sort(([a], [b]) => a.localeCompare(b))
    .map(([binding, value]) => [binding, sealer.seal(value, secretAad(namespace, worker, binding))]));
  return { ...rest, sealed };
}

/** The agent's step after reading a config: the Secret values opened. Throws SealedValueError. */
export function openEnv(env: PublishedEnv, namespace: string, worker: string, sealer: SecretSealer | undefined): ResolvedEnv {
  const { sealed, ...rest } = env;
  const names = Object.keys(sealed);
  if (names.length > 0 && !sealer) {
    throw new SealedValueError(`secret bindings ${names.join(', ')} are sealed and this agent has no sealing key (--sealing-key-file)`, { context: { worker: `${namespace}/${worker}` } });
  }
  const secrets: Record<string, string> = {};
  for (const [binding, value] of Object.entries(sealed)) {
    try {
      secrets[binding] = sealer!.open(value, secretAad(namespace, worker, binding));
    } catch (err) {
      throw new SealedValueError(`secret binding ${binding}: ${(err as Error).message}`, { cause: err, context: { worker: `${namespace}/${worker}`, binding } });
    }
  }
  return { ...rest, secrets };
}

export async function resolveWorker(namespace: string, worker: string, spec: EdgeWorkerSpec, lookup: BindingLookup): Promise<ResolvedWorker> {
  const source = await resolveSource(namespace, spec, lookup);
  return { source, env: await resolveEnv(namespace, worker, spec, lookup) };
}

export const sha256Digest = (data: string | Uint8Array) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** How a worker runs once the spec met the cluster admin's policy: every limit set. */
export interface RunSettings {
  limits: Limits;
  minWarmIsolates: number;
  /** The admin's egress policy; unset: the agent's default. */
  egress?: EgressPolicy;
}

/** The spec's limits with the built-in defaults under them: where no EdgePolicy applies (`edge agent --workers DIR`). */
export function builtinRunSettings(spec: EdgeWorkerSpec): RunSettings {
  const l = spec.limits ?? {};
  const d = BUILTIN_LIMIT_DEFAULTS;
  return {
    limits: {
      cpuMsPerRequest: l.cpuMsPerRequest ?? d.cpuMsPerRequest,
      memoryMiB: l.memoryMiB ?? d.memoryMiB,
      subrequests: l.subrequests ?? d.subrequests,
      wallMsPerRequest: l.wallMsPerRequest ?? d.wallMsPerRequest,
    },
    minWarmIsolates: spec.placement.minWarmIsolates ?? d.minWarmIsolates,
  };
}

/**
 * Identity of a worker version: whatever changes what its isolates run. Agents report
 * readiness per version, and a new version is loaded beside the old one. (The shape is
 * what it was before limits were resolved against a policy, so unchanged workers keep
 * their version; egress joins only when a policy sets it.)
 */
export function workerVersion(bundleDigest: string, spec: EdgeWorkerSpec, env: PublishedEnv | ResolvedEnv, run: RunSettings): string {
  // Empty secret maps are left out, so a worker without secrets keeps the version it had
  // before secrets were split from vars (an upgrade rolls nothing).
  const { sealed, secrets, ...rest } = env as Partial<PublishedEnv & ResolvedEnv> & Pick<ResolvedEnv, 'text' | 'actors' | 'ai'>;
  const hashed = {
    ...rest,
    ...(sealed && Object.keys(sealed).length > 0 ? { sealed } : {}),
    ...(secrets && Object.keys(secrets).length > 0 ? { secrets } : {}),
  };
  return sha256Digest(JSON.stringify({
    bundleDigest, limits: run.limits, env: hashed, compatibilityDate: spec.compatibilityDate ?? null, minWarm: run.minWarmIsolates,
    // Absent when empty, so a worker without flags keeps the version it had before flags existed.
    ...(spec.compatibilityFlags?.length ? { compatibilityFlags: spec.compatibilityFlags } : {}),
    ...(run.egress ? { egress: run.egress } : {}),
  }));
}
