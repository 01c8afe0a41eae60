import { AgentRing } from '../../common/agent-ring.js';
import type { Presence } from '../../common/nats.js';

// Which agent owns an actor: the region's ring (common/agent-ring.ts), keyed by the actor's
// instance key. The ring only says where an actor *should* be; single activation is
// enforced by the fenced claim in the actor's log.

/** What the router and the alarms ask of the ring. */
export interface ActorRingPort {
  /**
   * The agent that should host the actor (`key` an actorInstanceKey, whose namespace picks
   * the isolate hosts that may), or undefined when the region has no live agent for it.
   */
  owner(region: string, key: string): Presence | undefined;
  /** Called after the owners may have changed (an agent joined, left or began draining). */
  onChange(cb: () => void): void;
  /** The region's agents that may own actors now (live, not draining). */
  agents?(region: string): Presence[];
}

/** The ring the actor runtime builds from the agent view. */
export const ActorRing = AgentRing;
export type ActorRing = AgentRing;
