import { afterEach, describe, expect, it } from 'vitest';
import type { ActorAddress } from '../../common/actor-ops.js';
import { PulledBody } from '../../common/body-stream.js';
import { createLogger } from '../../common/log.js';
import type { ActorConfig } from '../../common/nats.js';
import { ActorHost } from '../../node-agent/actors/host.js';
import { FakeActorFactory, textOf, textRequest, textResponse, type FakeActorCode, type FakeActorInstance } from '../../node-agent/actors/fake/actor.js';
import { FakeActorLog } from '../../node-agent/actors/fake/log.js';
import type { PeerResponse } from '../../node-agent/peer/protocol.js';

// ActorHost and a streamed response body (issue 14, item 5), over the in-memory fenced log:
// the head leaves only once the request's writes are committed (the output gate), the body
// follows, the input gate stays closed until the body ended or was cancelled, and what the
// actor wrote while it streamed is committed then, before the next event runs.

const config: ActorConfig = {
  namespace: 'ns', name: 'rooms', uid: 'uid-1', generation: 1, className: 'Room', worker: 'chat',
  region: 'eu-west', idleTimeoutSeconds: 30, maxBytesPerActor: 1 << 20,
};
const A = (1).toString(16).padStart(64, '0');
const addr: ActorAddress = { namespace: config.namespace, actor: config.name, id: A };
const enc = new TextEncoder();
const dec = new TextDecoder();

async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(() => { done = true; }, () => { done = true; });
  await new Promise((r) => setImmediate(r));
  return done;
}

/** /stream writes `head`, answers with a body of `n` parts, writing `part:i` for each and `cancelled` on a cancel; /read answers the stored keys. */
function streamer(n: number): FakeActorCode {
  return {
    fetch(req, actor: FakeActorInstance): PeerResponse {
      if (new URL(req.url).pathname === '/read') return textResponse(200, [...actor.storage.snapshot().values.keys()].sort().join(','));
      actor.storage.put('head', '1');
      let i = 0;
      const stream = new PulledBody(async () => {
        if (i >= n) return null;
        actor.storage.put(`part:${i}`, '1');
        return enc.encode(`p${i++}`);
      }, () => actor.storage.put('cancelled', '1'));
      return { status: 200, statusText: 'OK', headers: [], body: new Uint8Array(0), stream, ended: stream.done };
    },
  };
}

const hosts: ActorHost[] = [];
afterEach(async () => { for (const h of hosts.splice(0)) await h.stop(); });

function setup(code: FakeActorCode) {
  const durable = new FakeActorLog();
  const host = new ActorHost({ agent: 'agent-a', log: createLogger({}, () => undefined), durable, factory: new FakeActorFactory(code) });
  hosts.push(host);
  return { host, durable };
}

const committedKeys = (durable: FakeActorLog) => durable.records(addr).flatMap((r) => (r.kind === 'commit' ? r.ops.map((o) => (o.op === 'put' ? o.key : o.op)) : []));

describe('actor host: a streamed response', () => {
  it('sends the head after the commit, holds the input gate until the body ends, then commits what the body wrote', async () => {
    const { host, durable } = setup(streamer(2));
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    durable.hook = async (write) => { if (write === 'commit') await held; };
    const call = host.call(config, A, textRequest('/stream', 'POST'));
    expect(await settled(call)).toBe(false);
    release();
    const res = await call;
    durable.hook = undefined;
    expect(committedKeys(durable)).toEqual(['head']);
    // The gate is closed while the body is unread: the next call waits.
    const next = host.call(config, A, textRequest('/read'));
    expect(await settled(next)).toBe(false);
    let body = '';
    for (let c = await res.stream!.read(); c !== null; c = await res.stream!.read()) body += dec.decode(c);
    expect(body).toBe('p0p1');
    expect(textOf(await next)).toBe('head,part:0,part:1');
    expect(committedKeys(durable)).toEqual(['head', 'part:0', 'part:1']);
  });

  it('a cancel by the caller ends the request: what cancel() wrote is committed and the gate opens', async () => {
    const { host, durable } = setup(streamer(1000));
    const res = await host.call(config, A, textRequest('/stream', 'POST'));
    await res.stream!.read();
    res.stream!.cancel('enough');
    expect(textOf(await host.call(config, A, textRequest('/read')))).toBe('cancelled,head,part:0');
    expect(committedKeys(durable)).toContain('cancelled');
  });

  it('a head whose commit fails is not sent, and its body is cancelled (the request ends)', async () => {
    const { host, durable } = setup(streamer(1000));
    durable.hook = (write) => { if (write === 'commit') throw new Error('nats: timeout'); };
    await expect(host.call(config, A, textRequest('/stream', 'POST'))).rejects.toThrow(/storage write failed/);
    durable.hook = undefined;
    // The actor restarts from the log: nothing of the failed request is there.
    expect(textOf(await host.call(config, A, textRequest('/read')))).toBe('');
  });
});
