import { describe, expect, it } from 'vitest';
// @ts-expect-error: the shim is plain JavaScript, run here outside an isolate.
import { hostOutcome, pendingHostCalls, settledOutcome, settleHost } from '../../../node-agent/shim/web/util.js';

// The shim's half of HostAsync (node-agent/abi/bridge.ts): an asynchronous host callback
// returns a ticket, and __edgeHostSettle(ticket, outcome) answers it, before or after the
// shim has read the ticket.

const tick = () => new Promise((r) => setImmediate(r));

describe('host calls by ticket', () => {
  it('resolves whether the outcome comes before the ticket is read or after', async () => {
    settleHost(1, { ok: true, value: 'early' });
    const early = hostOutcome(Promise.resolve(1));
    const late = hostOutcome(Promise.resolve(2));
    await tick();
    expect(pendingHostCalls()).toBe(1);
    settleHost(2, { ok: true, value: 'late' });
    expect(await early).toBe('early');
    expect(await late).toBe('late');
    expect(pendingHostCalls()).toBe(0);
  });

  it('a sync callback\'s ticket (a number, not a promise) works the same', async () => {
    const p = hostOutcome(3);
    await tick();
    settleHost(3, { ok: true, value: [1, 2] });
    expect(await p).toEqual([1, 2]);
  });

  it('an error outcome throws its message; an actor\'s exception keeps its type and is remote', async () => {
    settleHost(4, { ok: false, error: 'refused: not allowed' });
    await expect(hostOutcome(4)).rejects.toThrow(/^refused: not allowed$/);
    settleHost(5, { ok: false, error: 'x', exception: { name: 'RangeError', message: 'too far' } });
    const err = await hostOutcome(5).catch((e: unknown) => e) as Error & { remote?: boolean };
    expect(err).toBeInstanceOf(RangeError);
    expect(err.message).toBe('too far');
    expect(err.remote).toBe(true);
    expect(pendingHostCalls()).toBe(0);
  });

  it('many calls answered in reverse order each get their own outcome', async () => {
    const ps = Array.from({ length: 500 }, (_, i) => hostOutcome(Promise.resolve(100 + i)));
    await tick();
    for (let i = 499; i >= 0; i--) settleHost(100 + i, { ok: true, value: i });
    expect(await Promise.all(ps)).toEqual(Array.from({ length: 500 }, (_, i) => i));
    expect(pendingHostCalls()).toBe(0);
  });

  it('an outcome already at hand (a warm dynamic worker\'s answer) passes through without a ticket', async () => {
    expect(await hostOutcome(Promise.resolve(settledOutcome({ ok: true, value: 'warm' })))).toBe('warm');
    await expect(hostOutcome(settledOutcome({ ok: false, error: 'gone' }))).rejects.toThrow(/^gone$/);
    expect(pendingHostCalls()).toBe(0);
  });
});
