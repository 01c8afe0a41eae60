import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { pumpResponseBody, type PumpTarget } from '../../node-agent/serving/http-front.js';

// The response body pump of the HTTP front (serving/http-front.ts): the client going away
// must reach the body's source whenever it happens, also while a pull is still waiting.

/** A response whose write() says "full" on demand; 'close' and 'drain' are emitted by the test. */
class FakeResponse extends EventEmitter {
  writableFinished = false;
  full = false;
  readonly written: string[] = [];
  ended = false;
  write(chunk: Uint8Array): boolean {
    this.written.push(Buffer.from(chunk).toString('utf8'));
    return !this.full;
  }
  end(): this { this.ended = true; this.writableFinished = true; return this; }
}

/** A body whose pulls the test answers one by one. */
function controlledBody() {
  const pulls: ((c: Uint8Array | null) => void)[] = [];
  const cancels: string[] = [];
  return {
    pulls, cancels,
    body: {
      pull: () => new Promise<Uint8Array | null>((resolve) => { pulls.push(resolve); }),
      cancel: (reason: string) => { cancels.push(reason); },
    },
  };
}

const bytes = (s: string) => new TextEncoder().encode(s);
const settled = (p: Promise<unknown>) => Promise.race([p.then(() => true), new Promise((r) => setTimeout(() => r(false), 200))]);
const tick = () => new Promise((r) => setImmediate(r));

describe('pumpResponseBody', () => {
  it('writes every chunk, waits for drain when the client is slow, and ends the response', async () => {
    const res = new FakeResponse();
    const b = controlledBody();
    const done = pumpResponseBody(res as unknown as PumpTarget, b.body, false, Promise.resolve(bytes('a')));
    await tick();
    res.full = true;
    b.pulls[0]!(bytes('b'));
    await tick();
    expect(b.pulls).toHaveLength(1); // waiting for drain, not pulling
    res.full = false;
    res.emit('drain');
    await tick();
    b.pulls[1]!(null);
    expect(await settled(done)).toBe(true);
    expect(res.written).toEqual(['a', 'b']);
    expect(res.ended).toBe(true);
    expect(b.cancels).toEqual([]);
    expect(res.listenerCount('close') + res.listenerCount('drain')).toBe(0);
  });

  it('cancels the body when the client goes away while a pull waits (a refused write would wait for ever)', async () => {
    const res = new FakeResponse();
    const b = controlledBody();
    const done = pumpResponseBody(res as unknown as PumpTarget, b.body, false, Promise.resolve(bytes('a')));
    await tick();
    expect(b.pulls).toHaveLength(1);
    // Gone while the pull waits; a write to it now is refused, and its 'close' is past.
    res.full = true;
    res.emit('close');
    b.pulls[0]!(bytes('b'));
    expect(await settled(done)).toBe(true);
    expect(b.cancels).toEqual(['client closed the connection']);
    expect(res.written).toEqual(['a']);
    expect(res.ended).toBe(false);
  });

  it('cancels the body when the client goes away while it waits for drain', async () => {
    const res = new FakeResponse();
    const b = controlledBody();
    res.full = true;
    const done = pumpResponseBody(res as unknown as PumpTarget, b.body, false, Promise.resolve(bytes('a')));
    await tick();
    res.emit('close');
    expect(await settled(done)).toBe(true);
    expect(b.cancels).toEqual(['client closed the connection']);
    expect(b.pulls).toHaveLength(0);
  });

  it('a response that finished before its close is not a client gone away', async () => {
    const res = new FakeResponse();
    const b = controlledBody();
    const done = pumpResponseBody(res as unknown as PumpTarget, b.body, false, Promise.resolve(null));
    expect(await settled(done)).toBe(true);
    res.emit('close');
    expect(res.ended).toBe(true);
    expect(b.cancels).toEqual([]);
  });
});
