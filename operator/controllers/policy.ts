import {
  ALL_NAMESPACES, BUILTIN_LIMIT_DEFAULTS, LIMIT_BOUNDS, LIMIT_FIELDS, isBareTldWildcard,
  type EdgePolicy, type EdgeWorkerSpec, type EgressPolicy, type LimitField,
} from '../../common/api/index.js';
import { EdgeError } from '../../common/errors.js';
import { ConditionReasons as R, type ConditionReason } from '../../common/reasons.js';
import type { RunSettings } from '../../common/resolve-bindings.js';

// The cluster admin's EdgePolicy, resolved for one namespace, and what it decides about a
// spec: limits (defaults under the spec, ceilings over it) and which hosts the namespace may
// claim. Pure: the reconciler hands it the policies from its informer.

/** GPUs a namespace may hold when no EdgePolicy says: enough for a few small model servers, not a GPU pool. */
export const BUILTIN_MAX_GPUS = 8;

export interface EffectivePolicy {
  /** Who decided, for messages: `EdgePolicy default` or `the built-in defaults`. */
  source: string;
  defaults: Record<LimitField, number>;
  max: Record<LimitField, number>;
  /** Host patterns the namespace may claim; undefined: any host not granted to other namespaces. */
  hosts?: string[];
  egress?: EgressPolicy;
  maxGpus: number;
  /** Catalogue models the namespace may bind; undefined: all. */
  models?: string[];
}

/** The spec breaks the admin's policy; `reason` is its Ready=False reason, the message names field, value and ceiling. */
export class PolicyViolation extends EdgeError {
  constructor(readonly reason: ConditionReason, message: string, context?: Record<string, string>) {
    super(message, context ? { context } : {});
  }
}

const byName = (a: EdgePolicy, b: EdgePolicy) => a.metadata.name.localeCompare(b.metadata.name);

/** The policy governing a namespace: one naming it beats the "*" one; among equals, the first by name. */
export function selectPolicy(namespace: string, policies: readonly EdgePolicy[]): EdgePolicy | undefined {
  const sorted = [...policies].filter((p) => !p.metadata.deletionTimestamp).sort(byName);
  return sorted.find((p) => p.spec.namespaces.includes(namespace)) ?? sorted.find((p) => p.spec.namespaces.includes(ALL_NAMESPACES));
}

export function policyFor(namespace: string, policies: readonly EdgePolicy[]): EffectivePolicy {
  const p = selectPolicy(namespace, policies);
  const spec = p?.spec;
  const pick = (values: Partial<Record<LimitField, number>> | undefined, fallback: (f: LimitField) => number) =>
    Object.fromEntries(LIMIT_FIELDS.map((f) => [f, values?.[f] ?? fallback(f)])) as Record<LimitField, number>;
  return {
    source: p ? `EdgePolicy ${p.metadata.name}` : 'the built-in defaults',
    defaults: pick(spec?.limits?.defaults, (f) => BUILTIN_LIMIT_DEFAULTS[f]),
    max: pick(spec?.limits?.max, (f) => LIMIT_BOUNDS[f].max),
    ...(spec?.routes ? { hosts: spec.routes.hosts } : {}),
    ...(spec?.egress ? { egress: spec.egress } : {}),
    maxGpus: spec?.gpu?.maxGpus ?? BUILTIN_MAX_GPUS,
    ...(spec?.gpu?.models ? { models: spec.gpu.models } : {}),
  };
}

/**
 * The spec's limits with the policy's defaults under them, checked against its ceilings.
 * Throws PolicyViolation(LimitExceeded) naming every field over its ceiling.
 */
export function resolveRun(spec: EdgeWorkerSpec, pol: EffectivePolicy): RunSettings {
  const asked: Partial<Record<LimitField, number>> = { ...spec.limits, minWarmIsolates: spec.placement.minWarmIsolates };
  const value = (f: LimitField) => asked[f] ?? pol.defaults[f];
  const over = LIMIT_FIELDS.filter((f) => value(f) > pol.max[f]).map((f) => {
    const path = f === 'minWarmIsolates' ? 'spec.placement.minWarmIsolates' : `spec.limits.${f}`;
    return `${path} ${value(f)}${asked[f] === undefined ? ' (the default)' : ''} exceeds the ceiling ${pol.max[f]}`;
  });
  if (over.length > 0) throw new PolicyViolation(R.LimitExceeded, `${over.join('; ')} set by ${pol.source}`);
  const limits = {
    cpuMsPerRequest: value('cpuMsPerRequest'),
    memoryMiB: value('memoryMiB'),
    subrequests: value('subrequests'),
    wallMsPerRequest: value('wallMsPerRequest'),
  };
  // The CRD checks this when both are in the spec; a default can still break it.
  if (limits.wallMsPerRequest < limits.cpuMsPerRequest) {
    throw new PolicyViolation(R.LimitExceeded, `spec.limits.wallMsPerRequest ${limits.wallMsPerRequest} is below cpuMsPerRequest ${limits.cpuMsPerRequest} (defaults from ${pol.source})`);
  }
  return { limits, minWarmIsolates: value('minWarmIsolates'), ...(pol.egress ? { egress: pol.egress } : {}) };
}

/** Whether a grant (`shop.example.com`, `*.example.com`) covers a route host (`a.example.com`, `*.a.example.com`). */
export function hostGranted(host: string, grant: string): boolean {
  if (host === grant) return true;
  if (!grant.startsWith('*.')) return false;
  const domain = grant.slice(1); // ".example.com"
  const bare = host.startsWith('*.') ? host.slice(1) : `.${host}`;
  return bare.endsWith(domain) && bare.length > domain.length;
}

/**
 * Whether two route hosts can receive the same request: equal, or one a wildcard whose
 * domain holds the other (`*.example.com` and `a.example.com` or `*.b.example.com`).
 */
export function hostsOverlap(a: string, b: string): boolean {
  return a === b || (a.startsWith('*.') && hostGranted(b, a)) || (b.startsWith('*.') && hostGranted(a, b));
}

/**
 * Why `namespace` may not claim `host` at all, or undefined when it may: a bare TLD
 * wildcard never; with host grants in its policy, only those; without, any host that a
 * policy for named namespaces does not grant to them alone.
 */
export function hostRefusal(namespace: string, host: string, policies: readonly EdgePolicy[]): string | undefined {
  if (isBareTldWildcard(host)) return `${host} would catch a whole top-level domain; a wildcard needs at least two labels after "*."`;
  const own = selectPolicy(namespace, policies);
  const grants = own?.spec.routes?.hosts;
  if (grants) {
    return grants.some((g) => hostGranted(host, g)) ? undefined
      : `${host} is not among the hosts EdgePolicy ${own.metadata.name} grants namespace ${namespace} (${grants.join(', ') || 'none'})`;
  }
  const reserved = policies.find((p) => p !== own && !p.metadata.deletionTimestamp && !p.spec.namespaces.includes(ALL_NAMESPACES)
    && (p.spec.routes?.hosts ?? []).some((g) => hostGranted(host, g)));
  return reserved ? `${host} is granted to namespaces ${reserved.spec.namespaces.join(', ')} by EdgePolicy ${reserved.metadata.name}` : undefined;
}
