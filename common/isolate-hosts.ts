import type { Presence } from './nats.js';

// Which isolate-host process of an agent serves a namespace (`edge agent --isolate-hosts N`,
// docs/isolate-hosts.md), in one place: the agent's front routes by it, each host filters its
// desired state and DurableActors by it, and every agent's actor ring uses it to pick, for an
// actor, only the hosts of other agents that serve the actor's namespace.
//
// The assignment is a pure function of the namespace and the host count, so every process of
// every agent computes the same one without talking. The seam for a later "trust class"
// assignment is `isolateHostIndex`: whatever replaces it must stay a pure function of what
// the presence carries.

/** FNV-1a (32 bit): stable across processes and versions, unlike a seeded hash. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** The index (0..count-1) of the isolate host that serves `namespace`. */
export function isolateHostIndex(namespace: string, count: number): number {
  if (count <= 1) return 0;
  return fnv1a(namespace) % count;
}

/**
 * The agent's cordon host (node-agent/hosts/cordon.ts) has index = count: no namespace hashes
 * to it, so it hosts no DurableActors and is in no actor ring; it runs the workers of the
 * namespaces the front cordoned, at the lowest CPU priority.
 */
export const isCordonShare = (share: { index: number; count: number }): boolean => share.index >= share.count;

/** The presence name of host `index` of agent `agent` (its key is agentKey(region, this)). */
export const isolateHostName = (agent: string, index: number): string => `${agent}~h${index}`;

/** The agent a presence belongs to: itself, or the agent whose isolate host it is. */
export const agentOf = (p: Presence): string => p.isolateHost?.of ?? p.agent;

/**
 * Whether the process behind a presence hosts `namespace`'s isolates and actors: a front
 * (it runs none) never does; a host does for its share; an agent without hosts does for all.
 */
export function servesNamespace(p: Presence, namespace: string): boolean {
  if (p.isolateHosts !== undefined) return false;
  if (!p.isolateHost) return true;
  return isolateHostIndex(namespace, p.isolateHost.count) === p.isolateHost.index;
}
