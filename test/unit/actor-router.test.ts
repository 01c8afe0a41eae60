import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../common/log.js';
import type { ActorConfig } from '../../common/nats.js';
import { textOf, textRequest, textResponse } from '../../node-agent/actors/fake/actor.js';
import { FakeActorRing, fakePresence } from '../../node-agent/actors/fake/ring.js';
import { FakeActorRunner } from '../../node-agent/actors/fake/runner.js';
import { ActorRouter, ActorUnavailableError } from '../../node-agent/actors/router.js';
import { FakePeers } from '../../node-agent/peer/fake/peers.js';
import { ActorIds } from '../../node-agent/bindings/actor-id.js';
import { CallOutcomeUnknownError, ForeignActorIdError, NotHereError } from '../../node-agent/peer/protocol.js';

// ActorRouter between agents that share a fake ring and talk through fake peer ports:
// a call runs on the owner the ring names, and is routed again only when it certainly
// did not run (421 from the owner, or the owner could not be reached).

const config: ActorConfig = {
  namespace: 'ns', name: 'rooms', uid: 'uid-1', generation: 1, className: 'Room', worker: 'chat',
  region: 'eu-west', idleTimeoutSeconds: 30, maxBytesPerActor: 1 << 20,
};
const target = { namespace: config.namespace, actor: config.name, uid: config.uid };
/** An id the DurableActor's own bindings make (the peer path checks its tag). */
const ID = new ActorIds(config.uid).idFromName('room-1').hex;
const log = createLogger({}, () => undefined);

afterEach(() => { vi.useRealTimers(); });

function cluster(names: string[], routeTimeoutMs = 2000) {
  const ring = new FakeActorRing();
  const peers = new FakePeers();
  const agents = new Map(names.map((name) => {
    const presence = fakePresence(name);
    const host = new FakeActorRunner();
    host.onCall = async () => textResponse(200, `ran on ${name}`);
    const router = new ActorRouter({
      agent: name, ring, host, log, peerToken: 'secret', routeTimeoutMs, forward: peers.forward,
      config: (ns, actor) => (ns === config.namespace && actor === config.name ? config : undefined),
    });
    peers.add(presence.peerAddress!, router);
    return [name, { presence, host, router }] as const;
  }));
  const agent = (name: string) => agents.get(name)!;
  return { ring, peers, agent };
}

describe('actor router', () => {
  it('runs a call here when the ring names this agent', async () => {
    const { ring, peers, agent } = cluster(['a', 'b']);
    ring.setOwner(agent('a').presence);
    expect(textOf(await agent('a').router.fetch(target, ID, textRequest('/x')))).toBe('ran on a');
    expect(agent('a').host.calls).toHaveLength(1);
    expect(peers.calls).toEqual([]);
  });

  it("forwards a call to the owner's peer port, one hop, with the peer token", async () => {
    const { ring, peers, agent } = cluster(['a', 'b']);
    ring.setOwner(agent('b').presence);
    expect(textOf(await agent('a').router.fetch(target, ID, textRequest('/x')))).toBe('ran on b');
    expect(peers.calls).toEqual([{ address: agent('b').presence.peerAddress, namespace: 'ns', actor: 'rooms', id: ID, hops: 1, token: 'secret' }]);
    expect(agent('a').host.calls).toHaveLength(0);
    expect(agent('b').host.calls.map((c) => c.id)).toEqual([ID]);
  });

  it('routes again when the owner answers 421 (it did not run the call)', async () => {
    const { ring, agent } = cluster(['a', 'b', 'c']);
    ring.setOwner(agent('b').presence);
    // b is draining: it refuses the call, and the ring moves the actor to c meanwhile.
    agent('b').host.onCall = async () => {
      ring.setOwner(agent('c').presence);
      throw new NotHereError('agent b is draining');
    };
    expect(textOf(await agent('a').router.fetch(target, ID, textRequest('/x')))).toBe('ran on c');
    expect(agent('b').host.calls).toHaveLength(1);
    expect(agent('c').host.calls).toHaveLength(1);
  });

  it('routes again when the owner cannot be reached (nothing was sent)', async () => {
    const { ring, peers, agent } = cluster(['a', 'b', 'c']);
    peers.down(agent('b').presence.peerAddress!);
    let lookups = 0;
    ring.setRule(() => (++lookups === 1 ? agent('b').presence : agent('c').presence));
    expect(textOf(await agent('a').router.fetch(target, ID, textRequest('/x')))).toBe('ran on c');
    expect(peers.calls.map((c) => c.address)).toEqual([agent('b').presence.peerAddress, agent('c').presence.peerAddress]);
  });

  it('runs a call here when this agent refused it and the ring then names this agent', async () => {
    const { ring, agent } = cluster(['a', 'b']);
    ring.setOwner(agent('a').presence);
    let refusals = 1;
    agent('a').host.onCall = async () => {
      if (refusals-- > 0) throw new NotHereError('actor moved to another agent');
      return textResponse(200, 'ran on a');
    };
    expect(textOf(await agent('a').router.fetch(target, ID, textRequest('/x')))).toBe('ran on a');
    expect(agent('a').host.calls).toHaveLength(2);
  });

  it('never routes again a call that may have run', async () => {
    const { ring, peers, agent } = cluster(['a', 'b']);
    ring.setOwner(agent('b').presence);

    // The answer was lost after b ran the call.
    peers.loseAnswers(agent('b').presence.peerAddress!);
    const lost = agent('a').router.fetch(target, ID, textRequest('/lost'));
    await expect(lost).rejects.toBeInstanceOf(CallOutcomeUnknownError);
    await expect(lost).rejects.toThrow(/reached agent b.*outcome unknown/);
    expect(agent('b').host.calls).toHaveLength(1);

    // The actor's code failed on b: that is an answer (500), not a reason to run it again.
    peers.add(agent('b').presence.peerAddress!, agent('b').router);
    agent('b').host.onCall = async () => { throw new Error('the actor threw'); };
    const res = await agent('a').router.fetch(target, ID, textRequest('/throws'));
    expect(res.status).toBe(500);
    expect(textOf(res)).toMatch(/the actor threw/);
    expect(agent('b').host.calls).toHaveLength(2);

    // Here: the host's failure is the caller's.
    ring.setOwner(agent('a').presence);
    agent('a').host.onCall = async () => { throw new Error('storage write failed'); };
    await expect(agent('a').router.fetch(target, ID, textRequest('/local'))).rejects.toThrow('storage write failed');
    expect(agent('a').host.calls).toHaveLength(1);
    expect(peers.calls).toHaveLength(2);
  });

  it('waits for the ring to name an owner, and gives up after routeTimeoutMs', async () => {
    vi.useFakeTimers();
    const { ring, agent } = cluster(['a'], 1000);
    ring.setOwner(undefined);
    const late = agent('a').router.fetch(target, ID, textRequest('/late'));
    await vi.advanceTimersByTimeAsync(300);
    ring.setOwner(agent('a').presence);
    await vi.advanceTimersByTimeAsync(300);
    expect(textOf(await late)).toBe('ran on a');

    ring.setOwner(undefined);
    const lookupsBefore = ring.lookups.length;
    const never = agent('a').router.fetch(target, ID, textRequest('/never'));
    const outcome = expect(never).rejects.toThrow(ActorUnavailableError);
    await vi.advanceTimersByTimeAsync(999);
    expect(ring.lookups.length - lookupsBefore).toBeGreaterThan(3);
    await vi.advanceTimersByTimeAsync(500);
    await outcome;
    await expect(never).rejects.toThrow(/no live agent in eu-west/);
    expect(agent('a').host.calls).toHaveLength(1);
  });

  it('refuses calls for a DurableActor it does not know or that was re-created', async () => {
    const { ring, agent } = cluster(['a']);
    ring.setOwner(agent('a').presence);
    await expect(agent('a').router.fetch({ ...target, actor: 'other' }, ID, textRequest('/x'))).rejects.toThrow(ActorUnavailableError);
    await expect(agent('a').router.fetch({ ...target, uid: 'uid-0' }, ID, textRequest('/x'))).rejects.toThrow(/re-created/);
    await expect(agent('a').router.call('ns', 'other', ID, textRequest('/x'), 1)).rejects.toBeInstanceOf(NotHereError);
    expect(agent('a').host.calls).toHaveLength(0);
  });

  it('refuses a forwarded call for an id its DurableActor never made (made up, or of another uid)', async () => {
    const { ring, agent } = cluster(['a']);
    ring.setOwner(agent('a').presence);
    const madeUp = 'ab'.repeat(32);
    const foreign = new ActorIds('uid-other').idFromName('room-1').hex;
    await expect(agent('a').router.call('ns', 'rooms', madeUp, textRequest('/x'), 1)).rejects.toBeInstanceOf(ForeignActorIdError);
    await expect(agent('a').router.call('ns', 'rooms', foreign, textRequest('/x'), 1)).rejects.toBeInstanceOf(ForeignActorIdError);
    expect(agent('a').host.calls).toHaveLength(0);
    expect(textOf(await agent('a').router.call('ns', 'rooms', ID, textRequest('/x'), 1))).toBe('ran on a');
  });

  it('forwards a forwarded call again while under the hop limit, then runs it where it is', async () => {
    const { ring, peers, agent } = cluster(['a', 'b']);
    ring.setOwner(agent('b').presence);
    expect(textOf(await agent('a').router.call('ns', 'rooms', ID, textRequest('/x'), 1))).toBe('ran on b');
    expect(peers.calls.map((c) => c.hops)).toEqual([2]);
    expect(textOf(await agent('a').router.call('ns', 'rooms', ID, textRequest('/x'), 3))).toBe('ran on a');
    expect(peers.calls).toHaveLength(1);
  });
});
