import { describe, expect, it } from 'vitest';
import { ChunkPipe } from '../../common/body-stream.js';
import { createLogger } from '../../common/log.js';
import type { ActorConfig } from '../../common/nats.js';
import { textOf, textResponse } from '../../node-agent/actors/fake/actor.js';
import { FakeActorRing, fakePresence } from '../../node-agent/actors/fake/ring.js';
import { FakeActorRunner } from '../../node-agent/actors/fake/runner.js';
import { ActorRouter, ActorUnavailableError } from '../../node-agent/actors/router.js';
import { FakePeers } from '../../node-agent/peer/fake/peers.js';
import { ActorIds } from '../../node-agent/bindings/actor-id.js';
import { NotHereError, type PeerRequest } from '../../node-agent/peer/protocol.js';

// A streamed request body cannot be sent twice: the router routes a call again (421, an
// owner it could not reach) only while no byte of its body was read; a whole body is
// retried as before.

const config: ActorConfig = {
  namespace: 'ns', name: 'rooms', uid: 'uid-1', generation: 1, className: 'Room', worker: 'chat',
  region: 'eu-west', idleTimeoutSeconds: 30, maxBytesPerActor: 1 << 20,
};
const target = { namespace: config.namespace, actor: config.name, uid: config.uid };
const ID = new ActorIds(config.uid).idFromName('room-1').hex;
const log = createLogger({}, () => undefined);
const enc = new TextEncoder();
const dec = new TextDecoder();

function cluster(names: string[]) {
  const ring = new FakeActorRing();
  const peers = new FakePeers();
  const agents = new Map(names.map((name) => {
    const presence = fakePresence(name);
    const host = new FakeActorRunner();
    const router = new ActorRouter({
      agent: name, ring, host, log, peerToken: 'secret', routeTimeoutMs: 2000, forward: peers.forward,
      config: (ns, actor) => (ns === config.namespace && actor === config.name ? config : undefined),
    });
    peers.add(presence.peerAddress!, router);
    return [name, { presence, host, router }] as const;
  }));
  return { ring, agent: (name: string) => agents.get(name)! };
}

async function streamed(parts: string[]): Promise<PeerRequest> {
  const pipe = new ChunkPipe();
  for (const p of parts) await pipe.write(enc.encode(p));
  pipe.end();
  return { url: 'http://actor.test/up', method: 'POST', headers: [], body: null, stream: pipe };
}

async function readAll(req: PeerRequest): Promise<string> {
  let out = '';
  for (let c = await req.stream!.read(); c !== null; c = await req.stream!.read()) out += dec.decode(c);
  return out;
}

describe('actor router and streamed request bodies', () => {
  it('routes again a call whose body was not read yet, and the next owner gets all of it', async () => {
    const { ring, agent } = cluster(['a', 'b', 'c']);
    ring.setOwner(agent('b').presence);
    agent('b').host.onCall = async () => { ring.setOwner(agent('c').presence); throw new NotHereError('agent b is draining'); };
    agent('c').host.onCall = async (_cfg, _id, req) => textResponse(200, await readAll(req));
    expect(textOf(await agent('a').router.fetch(target, ID, await streamed(['x', 'y'])))).toBe('xy');
  });

  it('does not route again a call whose body had begun: the caller gets an error naming why', async () => {
    const { ring, agent } = cluster(['a', 'b', 'c']);
    ring.setOwner(agent('b').presence);
    agent('b').host.onCall = async (_cfg, _id, req) => {
      await req.stream!.read();
      ring.setOwner(agent('c').presence);
      throw new NotHereError('agent b is draining');
    };
    const err = await agent('a').router.fetch(target, ID, await streamed(['x', 'y'])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ActorUnavailableError);
    expect((err as Error).message).toMatch(/cannot be sent twice/);
    expect(agent('c').host.calls).toHaveLength(0);
  });
});
