import HashRing from 'hashring';
import type { AgentView } from '../../common/agent-view.js';
import type { Presence } from '../../common/nats.js';

// Which agent owns an actor: a consistent-hash ring per region over the live agents of
// that region that are not draining. Virtual nodes spread actors evenly, and when an agent
// joins or leaves only the actors on its arcs move. The ring only says where an actor
// *should* be; single activation is enforced by the fenced claim in the actor's log.

/** Points per agent on the ring (ketama uses 4 per vnode, so 160 points). */
const VNODES = 40;

export const actorKey = (namespace: string, actor: string, id: string) => `${namespace}/${actor}/${id}`;

/** What the router and the alarms ask of the ring. */
export interface ActorRingPort {
  /** The agent that should host the actor, or undefined when the region has no live agent. */
  owner(region: string, key: string): Presence | undefined;
  /** Called after the owners may have changed (an agent joined, left or began draining). */
  onChange(cb: () => void): void;
}

export class ActorRing implements ActorRingPort {
  private rings = new Map<string, { ring: HashRing; agents: Map<string, Presence> }>();
  private readonly listeners = new Set<() => void>();

  constructor(private readonly view: AgentView) {
    view.onChange((c) => { if (c.all) this.rebuild(); });
    this.rebuild();
  }

  onChange(cb: () => void): void { this.listeners.add(cb); }

  rebuild(): void {
    const byRegion = new Map<string, Map<string, Presence>>();
    for (const p of this.view.agents()) {
      if (p.draining) continue;
      let m = byRegion.get(p.region);
      if (!m) { m = new Map(); byRegion.set(p.region, m); }
      m.set(p.agent, p);
    }
    const next = new Map<string, { ring: HashRing; agents: Map<string, Presence> }>();
    for (const [region, agents] of byRegion) {
      const servers: Record<string, { vnodes: number }> = {};
      for (const name of [...agents.keys()].sort()) servers[name] = { vnodes: VNODES };
      next.set(region, { ring: new HashRing(servers, 'md5', { 'max cache size': 20_000 }), agents });
    }
    const before = this.signature();
    this.rings = next;
    if (this.signature() !== before) for (const l of this.listeners) l();
  }

  private signature(): string {
    return [...this.rings].map(([r, x]) => `${r}:${[...x.agents.keys()].sort().join(',')}`).sort().join(';');
  }

  /** The agent that should host the actor, or undefined when the region has no live agent. */
  owner(region: string, key: string): Presence | undefined {
    const r = this.rings.get(region);
    if (!r || r.agents.size === 0) return undefined;
    return r.agents.get(r.ring.get(key));
  }

  agents(region: string): Presence[] {
    return [...(this.rings.get(region)?.agents.values() ?? [])];
  }
}
