import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger, type LogFields } from '../../common/log.js';
import { encodeJson, type ActorAlarm, type ActorConfig } from '../../common/nats.js';
import { ActorAlarms, ALARM_FIRST_RETRY_MS, ALARM_MAX_RETRIES } from '../../node-agent/actors/alarms.js';
import { FakeAlarmIndex } from '../../node-agent/actors/fake/alarm-index.js';
import { FakeActorRing, fakePresence } from '../../node-agent/actors/fake/ring.js';
import { FakeActorRunner } from '../../node-agent/actors/fake/runner.js';

// ActorAlarms on fake time, over an in-memory alarm index, a fake ring and a fake host:
// an alarm fires once per time it is set, on the agent the ring gives the actor, and a
// failing alarm() is retried with exponential backoff up to ALARM_MAX_RETRIES.

const config: ActorConfig = {
  namespace: 'ns', name: 'rooms', uid: 'uid-1', generation: 1, className: 'Room', worker: 'chat',
  region: 'eu-west', idleTimeoutSeconds: 30, maxBytesPerActor: 1 << 20,
};
const ID = 'cd'.repeat(32);
const KEY = `ns.rooms.${ID}`;
const T0 = Date.UTC(2026, 0, 1);

const me = fakePresence('agent-a');
const other = fakePresence('agent-b');

const running: ActorAlarms[] = [];
beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(T0);
});
afterEach(async () => {
  for (const a of running.splice(0)) await a.stop();
  vi.useRealTimers();
});

async function setup(opts: { owner?: typeof me; known?: boolean } = {}) {
  const index = new FakeAlarmIndex();
  const ring = new FakeActorRing();
  ring.setOwner(opts.owner ?? me);
  const host = new FakeActorRunner();
  const lines: LogFields[] = [];
  const alarms = new ActorAlarms({
    agent: me.agent, index, ring, host,
    log: createLogger({}, (l) => { lines.push(JSON.parse(l) as LogFields); }, 'debug'),
    config: (ns, actor) => (opts.known !== false && ns === config.namespace && actor === config.name ? config : undefined),
  });
  running.push(alarms);
  const set = async (time: number) => {
    await index.put(KEY, encodeJson({ namespace: config.namespace, actor: config.name, id: ID, region: config.region, time } satisfies ActorAlarm));
    await vi.advanceTimersByTimeAsync(0);
  };
  return { index, ring, host, lines, alarms, set };
}

/** When each alarm() call ran, in ms after T0. */
const firedAt = (host: FakeActorRunner) => host.alarms.map((a) => a.at - T0);

describe('actor alarms', () => {
  it('fires an alarm once, when its time comes, and again only when it is set again', async () => {
    const { host, alarms, set } = await setup();
    await set(T0 + 5000);
    await alarms.start();
    await vi.advanceTimersByTimeAsync(4999);
    expect(host.alarms).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(host.alarms).toEqual([expect.objectContaining({ id: ID, time: T0 + 5000, retryCount: 0, at: T0 + 5000 })]);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(host.alarms).toHaveLength(1);

    await set(T0 + 90_000);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(firedAt(host)).toEqual([5000, 90_000]);
    expect(host.alarms[1]).toMatchObject({ time: T0 + 90_000, retryCount: 0 });
  });

  it('keeps the id\'s name with the alarm, through a set by an activation that did not know it, and fires with it', async () => {
    const { index, host, alarms } = await setup();
    await alarms.start();
    alarms.record(config, ID, T0 + 1000, 'room-1');
    await vi.advanceTimersByTimeAsync(0);
    // The alarm's own activation (started without the name) sets the next one.
    alarms.record(config, ID, T0 + 2000);
    await vi.advanceTimersByTimeAsync(0);
    expect(index.writes.map((w) => (w.value as ActorAlarm | undefined)?.name)).toEqual(['room-1', 'room-1']);
    await vi.advanceTimersByTimeAsync(2000);
    expect(host.alarms).toEqual([expect.objectContaining({ time: T0 + 2000, name: 'room-1' })]);
  });

  it('fires at once an alarm whose time passed while no agent watched', async () => {
    const { host, alarms, set } = await setup();
    await set(T0 - 60_000);
    await alarms.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(firedAt(host)).toEqual([0]);
  });

  it('indexes what the host reports only when it changes, and follows its own writes', async () => {
    const { index, host, alarms } = await setup();
    await alarms.start();
    alarms.record(config, ID, T0 + 1000);
    await vi.advanceTimersByTimeAsync(0);
    alarms.record(config, ID, T0 + 1000);
    await vi.advanceTimersByTimeAsync(0);
    expect(index.writes).toEqual([{ op: 'put', key: KEY, value: { namespace: 'ns', actor: 'rooms', id: ID, region: 'eu-west', time: T0 + 1000 } }]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(firedAt(host)).toEqual([1000]);

    alarms.record(config, ID, T0 + 5000);
    await vi.advanceTimersByTimeAsync(0);
    alarms.record(config, ID, null);
    await vi.advanceTimersByTimeAsync(0);
    alarms.record(config, ID, null);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(index.writes.map((w) => w.op)).toEqual(['put', 'put', 'purge']);
    expect(host.alarms).toHaveLength(1);
  });

  it(`retries a failing alarm with exponential backoff, ${ALARM_MAX_RETRIES} times, then gives up`, async () => {
    const { host, lines, alarms, set } = await setup();
    host.onAlarm = async () => { throw new Error('alarm() threw'); };
    await set(T0 + 1000);
    await alarms.start();
    await vi.advanceTimersByTimeAsync(24 * 3600_000);
    const expected = [1000];
    for (let retry = 1; retry <= ALARM_MAX_RETRIES; retry++) expected.push(expected.at(-1)! + ALARM_FIRST_RETRY_MS * 2 ** (retry - 1));
    expect(firedAt(host)).toEqual(expected);
    expect(host.alarms.map((a) => a.retryCount)).toEqual(Array.from({ length: ALARM_MAX_RETRIES + 1 }, (_, i) => i));
    expect(lines.filter((l) => l.level === 'error' && String(l.msg).includes('giving up'))).toHaveLength(1);
  });

  it('ends the backoff when a retry succeeds: the next alarm fires on time, as a first try', async () => {
    const { host, alarms, set } = await setup();
    let failures = 2;
    host.onAlarm = async () => { if (failures-- > 0) throw new Error('alarm() threw'); return true; };
    await set(T0 + 1000);
    await alarms.start();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(firedAt(host)).toEqual([1000, 3000, 7000]);
    await set(T0 + 100_000);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(firedAt(host)).toEqual([1000, 3000, 7000, 100_000]);
    expect(host.alarms.at(-1)!.retryCount).toBe(0);
  });

  it('keeps a planned alarm and its backoff through a ring change that leaves the actor here', async () => {
    const { ring, host, alarms, set } = await setup();
    let failures = 1;
    host.onAlarm = async () => { if (failures-- > 0) throw new Error('alarm() threw'); return true; };
    await set(T0 + 1000);
    await alarms.start();
    await vi.advanceTimersByTimeAsync(2000);
    ring.setOwner(me);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(firedAt(host)).toEqual([1000, 1000 + ALARM_FIRST_RETRY_MS]);
  });

  it('does not retry an alarm the actor no longer has set for that time', async () => {
    const { host, alarms, set } = await setup();
    host.onAlarm = async () => false;
    await set(T0 + 1000);
    await alarms.start();
    await vi.advanceTimersByTimeAsync(600_000);
    expect(host.alarms).toHaveLength(1);
  });

  it('fires only the alarms of actors the ring gives this agent, and follows the ring', async () => {
    const { ring, host, alarms, set } = await setup({ owner: other });
    await set(T0 + 1000);
    await alarms.start();
    await vi.advanceTimersByTimeAsync(5000);
    expect(host.alarms).toEqual([]);
    // The other agent left: its due alarm is ours now.
    ring.setOwner(me);
    await vi.advanceTimersByTimeAsync(0);
    expect(firedAt(host)).toEqual([5000]);

    await set(T0 + 20_000);
    ring.setOwner(other);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(host.alarms).toHaveLength(1);
  });

  it('drops the timer of an alarm removed from the index', async () => {
    const { index, host, alarms, set } = await setup();
    await alarms.start();
    await set(T0 + 1000);
    await index.purge(KEY);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(host.alarms).toEqual([]);
  });

  it('skips the alarm of a DurableActor this agent does not know', async () => {
    const { host, alarms, set } = await setup({ known: false });
    await set(T0 + 1000);
    await alarms.start();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(host.alarms).toEqual([]);
  });

  it('stops firing and watching once stopped', async () => {
    const { index, host, alarms, set } = await setup();
    await set(T0 + 1000);
    await alarms.start();
    expect(index.watchers).toBe(1);
    await alarms.stop();
    // No timer left behind to keep the process alive.
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(host.alarms).toEqual([]);
    expect(index.watchers).toBe(0);
  });
});
