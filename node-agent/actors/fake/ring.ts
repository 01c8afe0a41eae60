import type { Presence } from '../../../common/nats.js';
import type { ActorRingPort } from '../ring.js';

// A ring whose owners the test sets: one agent for every actor, or a rule per key.
// change() is what a rebuilt ActorRing does when the agents of a region change.

export class FakeActorRing implements ActorRingPort {
  private readonly listeners = new Set<() => void>();
  private rule: (region: string, key: string) => Presence | undefined = () => undefined;
  /** Every lookup, in order. */
  readonly lookups: { region: string; key: string }[] = [];

  owner(region: string, key: string): Presence | undefined {
    this.lookups.push({ region, key });
    return this.rule(region, key);
  }

  onChange(cb: () => void): void { this.listeners.add(cb); }

  /** Every actor belongs to `owner` (none: the region has no live agent); listeners are told. */
  setOwner(owner: Presence | undefined): void {
    this.setRule(() => owner);
  }

  setRule(rule: (region: string, key: string) => Presence | undefined): void {
    this.rule = rule;
    for (const l of this.listeners) l();
  }
}

export function fakePresence(agent: string, opts: { region?: string; peerAddress?: string | null } = {}): Presence {
  const peer = opts.peerAddress === undefined ? `http://${agent}.peer.test:8081` : opts.peerAddress;
  return {
    agent, node: agent, region: opts.region ?? 'eu-west', address: `http://${agent}.test:8080`,
    ...(peer === null ? {} : { peerAddress: peer }),
    ttlMs: 5000, startedAt: '2026-01-01T00:00:00Z', draining: false,
  };
}
