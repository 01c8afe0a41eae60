import HashRing from 'hashring';
import type { AgentView } from './agent-view.js';
import { servesNamespace } from './isolate-hosts.js';
import { refNamespace } from './keys.js';
import type { Presence } from './nats.js';

// A consistent-hash ring per region over the live agents of that region that are not
// draining: which agent owns an actor (node-agent/actors/), and which few agents form a
// worker's shard (node-agent/serving/shard.ts, docs/shards.md). Virtual nodes spread keys
// evenly, and when an agent joins or leaves only the keys on its arcs move. The ring only
// says where a key *should* be; single activation of an actor is enforced by the fenced
// claim in the actor's log. With isolate hosts (docs/isolate-hosts.md) the ring of a key
// holds only the processes that serve its namespace: one host of each agent, never a front.

/** Points per agent on the ring (ketama uses 4 per vnode, so 160 points). */
const VNODES = 40;

interface Ring {
  ring: HashRing;
  agents: Map<string, Presence>;
  /** Some of the agents are isolate hosts, each serving only its share of namespaces. */
  hosts: boolean;
}

function makeRing(agents: Map<string, Presence>): Ring {
  const servers: Record<string, { vnodes: number }> = {};
  for (const name of [...agents.keys()].sort()) servers[name] = { vnodes: VNODES };
  return { ring: new HashRing(servers, 'md5', { 'max cache size': 20_000 }), agents, hosts: [...agents.values()].some((p) => p.isolateHost) };
}

export class AgentRing {
  private rings = new Map<string, Ring>();
  /** `<region>/<namespace>` -> the ring of the processes serving that namespace, built on first use. */
  private byNamespace = new Map<string, Ring>();
  private readonly listeners = new Set<() => void>();

  constructor(private readonly view: Pick<AgentView, 'agents' | 'onChange'>) {
    view.onChange((c) => { if (c.all) this.rebuild(); });
    this.rebuild();
  }

  onChange(cb: () => void): void { this.listeners.add(cb); }

  rebuild(): void {
    const byRegion = new Map<string, Map<string, Presence>>();
    for (const p of this.view.agents()) {
      // A front runs no isolates (its hosts have their own presence).
      if (p.draining || p.isolateHosts !== undefined) continue;
      let m = byRegion.get(p.region);
      if (!m) { m = new Map(); byRegion.set(p.region, m); }
      m.set(p.agent, p);
    }
    const next = new Map<string, Ring>();
    for (const [region, agents] of byRegion) next.set(region, makeRing(agents));
    const before = this.signature();
    this.rings = next;
    this.byNamespace = new Map();
    if (this.signature() !== before) for (const l of this.listeners) l();
  }

  private signature(): string {
    return [...this.rings].map(([r, x]) => `${r}:${[...x.agents.keys()].sort().join(',')}`).sort().join(';');
  }

  /** The agent that should host the actor, or undefined when the region has no live agent. */
  owner(region: string, key: string): Presence | undefined {
    const r = this.ringFor(region, refNamespace(key));
    if (!r || r.agents.size === 0) return undefined;
    return r.agents.get(r.ring.get(key));
  }

  /**
   * The first `n` distinct processes on the ring from `key` (a ref or key whose namespace,
   * `refNamespace`, picks the isolate hosts that may serve it): a worker's shard. The first
   * is owner()'s answer, and growing `n` only appends, so a bigger shard keeps the smaller
   * one's members. Fewer when the region has fewer.
   */
  members(region: string, key: string, n: number, self?: Presence): Presence[] {
    let r = this.ringFor(region, refNamespace(key));
    if (self && !r?.agents.has(self.agent)) r = this.withSelf(region, refNamespace(key), r, self);
    if (!r || r.agents.size === 0 || n <= 0) return [];
    const names = r.ring.range(key, Math.min(n, r.agents.size), true) as string[];
    return names.map((name) => r.agents.get(name)!);
  }

  /** How many processes of the region may serve `key`'s namespace (`self` counted, as in members()). */
  size(region: string, key: string, self?: Presence): number {
    const r = this.ringFor(region, refNamespace(key));
    return (r?.agents.size ?? 0) + (self && !r?.agents.has(self.agent) ? 1 : 0);
  }

  /**
   * The ring as it will be once `self` (a process whose presence is not in the view yet,
   * serving `namespace`) is: adding it moves only the keys it takes, so what it computes
   * with it is what every other process computes once its presence lands.
   */
  private withSelf(region: string, namespace: string, r: Ring | undefined, self: Presence): Ring {
    const id = `${region}/${namespace}/+${self.agent}`;
    let w = this.byNamespace.get(id);
    if (!w) {
      w = makeRing(new Map([...(r?.agents ?? []), [self.agent, self]]));
      this.byNamespace.set(id, w);
    }
    return w;
  }

  private ringFor(region: string, namespace: string): Ring | undefined {
    const all = this.rings.get(region);
    if (!all) return undefined;
    // Without isolate hosts in the region every agent serves every namespace: one ring.
    if (!all.hosts) return all;
    const id = `${region}/${namespace}`;
    let r = this.byNamespace.get(id);
    if (!r) {
      r = makeRing(new Map([...all.agents].filter(([, p]) => servesNamespace(p, namespace))));
      this.byNamespace.set(id, r);
    }
    return r;
  }

  agents(region: string): Presence[] {
    return [...(this.rings.get(region)?.agents.values() ?? [])];
  }
}
