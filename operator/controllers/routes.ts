import type { EdgeWorker, Route } from '../../common/api/index.js';
import { workerRef } from '../../common/keys.js';
import { ConditionReasons as R } from '../../common/reasons.js';
import { hostsOverlap } from './policy.js';

// Who owns a host, the way OpenShift routes and Gateway API listeners decide it: the first
// claimant (oldest creationTimestamp, then namespace/name) owns the host, and only its
// namespace may route under it, on any path; a wildcard and a host under it are the same
// claim. Within one namespace workers share their hosts, and an identical (host, path) goes
// to the older worker. Deciding in age order means a later object can never take traffic,
// and when an owner goes (or is being deleted) the next claimant takes over.
//
// Pure: the reconciler passes every EdgeWorker from its cache and asks for its own.

export interface RouteRefusal {
  route: Route;
  reason: typeof R.RouteConflict | typeof R.RouteNotAllowed;
  message: string;
  /** RouteConflict: the EdgeWorker (`ns/name`) that owns the host. */
  owner?: string;
}

export interface RouteDecision {
  /** The routes this worker serves: what goes into its config. */
  allowed: Route[];
  refused: RouteRefusal[];
}

interface Claim { ref: string; namespace: string; created: string; route: Route }

const refOf = (w: EdgeWorker) => workerRef(w.metadata.namespace ?? 'default', w.metadata.name);

/** The order claims are decided in: oldest first, then namespace/name. */
export function claimOrder(a: EdgeWorker, b: EdgeWorker): number {
  const ca = a.metadata.creationTimestamp ?? '';
  const cb = b.metadata.creationTimestamp ?? '';
  if (ca !== cb) return ca < cb ? -1 : 1;
  const ra = refOf(a);
  const rb = refOf(b);
  return ra < rb ? -1 : ra > rb ? 1 : 0;
}

/**
 * Decides every live worker's routes. `refusal(namespace, host)` says why a namespace may
 * not claim a host at all (the admin's grants), or undefined.
 */
export function decideRoutes(workers: readonly EdgeWorker[], refusal: (namespace: string, host: string) => string | undefined): Map<string, RouteDecision> {
  const out = new Map<string, RouteDecision>();
  /** Winning claims by host: exact hosts are found directly, wildcards by a scan of these. */
  const won = new Map<string, Claim[]>();
  const wildcards: Claim[] = [];
  const conflicting = (c: Claim): Claim | undefined => {
    const candidates = c.route.host.startsWith('*.')
      ? [...won.values()].flat()
      : [...(won.get(c.route.host) ?? []), ...wildcards];
    return candidates.find((w) => w.ref !== c.ref && hostsOverlap(w.route.host, c.route.host) && (w.namespace !== c.namespace
      || (w.route.host === c.route.host && w.route.pathPrefix === c.route.pathPrefix)));
  };
  for (const w of [...workers].filter((x) => !x.metadata.deletionTimestamp).sort(claimOrder)) {
    const ns = w.metadata.namespace ?? 'default';
    const ref = refOf(w);
    const decision: RouteDecision = { allowed: [], refused: [] };
    out.set(ref, decision);
    for (const route of w.spec.routes ?? []) {
      const id = `${route.host}${route.pathPrefix}`;
      const why = refusal(ns, route.host);
      if (why !== undefined) {
        decision.refused.push({ route, reason: R.RouteNotAllowed, message: `route ${id}: ${why}` });
        continue;
      }
      const claim: Claim = { ref, namespace: ns, created: w.metadata.creationTimestamp ?? '', route };
      const owner = conflicting(claim);
      if (owner) {
        const what = owner.namespace === ns ? `is served by EdgeWorker ${owner.ref}` : `${owner.route.host} belongs to namespace ${owner.namespace} (EdgeWorker ${owner.ref}, which claimed it first)`;
        decision.refused.push({ route, reason: R.RouteConflict, owner: owner.ref, message: `route ${id}: ${what}` });
        continue;
      }
      decision.allowed.push(route);
      const list = won.get(route.host) ?? [];
      list.push(claim);
      won.set(route.host, list);
      if (route.host.startsWith('*.')) wildcards.push(claim);
    }
  }
  return out;
}

/**
 * The workers whose route decision a change of `w` (from `old`) may move: every other worker
 * with a host overlapping one of w's, before or after the change.
 */
export function routeNeighbours(w: EdgeWorker, old: EdgeWorker | undefined, all: readonly EdgeWorker[]): EdgeWorker[] {
  const hosts = [...(w.spec.routes ?? []), ...(old?.spec.routes ?? [])].map((r) => r.host);
  if (hosts.length === 0) return [];
  const self = refOf(w);
  return all.filter((x) => refOf(x) !== self && (x.spec.routes ?? []).some((r) => hosts.some((h) => hostsOverlap(h, r.host))));
}
