import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ActorAddress } from '../../common/actor-ops.js';
import { FencedError } from '../../common/actor-ops.js';
import { createLogger, type LogFields } from '../../common/log.js';
import type { ActorConfig } from '../../common/nats.js';
import { ActorHost, ActorResetError, STALL_MS, type ActorHostOptions } from '../../node-agent/actors/host.js';
import { FakeActorFactory, textOf, textRequest, textResponse, type FakeActorCode } from '../../node-agent/actors/fake/actor.js';
import { FakeActorLog } from '../../node-agent/actors/fake/log.js';
import { actorInstanceKey } from '../../common/keys.js';
import { NotHereError } from '../../node-agent/peer/protocol.js';
import { ACTOR_NAME_HEADER } from '../../node-agent/bindings/actor-binding.js';
import { ActorIds } from '../../node-agent/bindings/actor-id.js';

// ActorHost on its own, over an in-memory fenced log and actors made of test functions:
// single activation, the input gate, the output gate, fencing, resets and drain.

const config: ActorConfig = {
  namespace: 'ns', name: 'rooms', uid: 'uid-1', generation: 1, className: 'Room', worker: 'chat',
  region: 'eu-west', idleTimeoutSeconds: 30, maxBytesPerActor: 1 << 20,
};
const idOf = (n: number) => n.toString(16).padStart(64, '0');
const A = idOf(1);
const B = idOf(2);
const addr = (id: string): ActorAddress => ({ namespace: config.namespace, actor: config.name, id });
const keyOf = (id: string) => actorInstanceKey(config.namespace, config.name, id);

/** A counter actor: each request adds one to `count` (and writes it), then answers with it. */
const counter: FakeActorCode = {
  fetch(req, actor) {
    if (new URL(req.url).pathname === '/read') return textResponse(200, actor.storage.get('count') ?? '0');
    const n = Number(actor.storage.get('count') ?? '0') + 1;
    actor.storage.put('count', String(n));
    return textResponse(200, String(n));
  },
};

/** The counter, but a request to `path` first waits for `gate`. */
function gatedCounter(path: string, gate: Promise<void>): FakeActorCode {
  return {
    async fetch(req, actor) {
      if (new URL(req.url).pathname === path) await gate;
      return counter.fetch!(req, actor);
    },
  };
}

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => { resolve = r; });
  return { promise, resolve };
}

/** Whether the promise has settled after every pending microtask and short timer ran. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(() => { done = true; }, () => { done = true; });
  await new Promise((r) => setImmediate(r));
  return done;
}

const hosts: ActorHost[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const h of hosts.splice(0)) await h.stop();
});

function setup(code: FakeActorCode = counter, opts: Partial<ActorHostOptions> = {}) {
  const durable = new FakeActorLog();
  const factory = new FakeActorFactory(code);
  const lines: LogFields[] = [];
  const alarmsSet: { id: string; time: number | null; name?: string }[] = [];
  const host = new ActorHost({
    agent: 'agent-a',
    log: createLogger({}, (l) => { lines.push(JSON.parse(l) as LogFields); }, 'debug'),
    durable,
    factory,
    onAlarmSet: (_cfg, id, time, name) => { alarmsSet.push({ id, time, ...(name !== undefined ? { name } : {}) }); },
    ...opts,
  });
  hosts.push(host);
  return { host, durable, factory, lines, alarmsSet };
}

describe('actor host', () => {
  it('activates an actor once, however many calls arrive together', async () => {
    const { host, durable, factory } = setup();
    const answers = await Promise.all(Array.from({ length: 5 }, () => host.call(config, A, textRequest('/inc', 'POST'))));
    await host.call(config, B, textRequest('/inc', 'POST'));
    expect(answers.map(textOf).sort()).toEqual(['1', '2', '3', '4', '5']);
    expect(factory.of(A)).toHaveLength(1);
    expect(factory.of(B)).toHaveLength(1);
    expect(durable.records(addr(A)).filter((r) => r.kind === 'claim')).toHaveLength(1);
    expect(host.keys().sort()).toEqual([keyOf(A), keyOf(B)]);
  });

  it('runs one request at a time, in arrival order (the input gate), and commits each in that order', async () => {
    const events: string[] = [];
    const gates = new Map<string, ReturnType<typeof deferred>>();
    const { host, durable } = setup({
      async fetch(req, actor) {
        const path = new URL(req.url).pathname;
        events.push(`start ${path}`);
        await gates.get(path)!.promise;
        actor.storage.put('last', path);
        events.push(`end ${path}`);
        return textResponse(200, path);
      },
    });
    for (const p of ['/a', '/b', '/c']) gates.set(p, deferred());
    const calls = ['/a', '/b', '/c'].map((p) => host.call(config, A, textRequest(p)));
    await settled(calls[0]!);
    expect(events).toEqual(['start /a']);
    // Released out of order: /c and /b still wait for /a.
    gates.get('/c')!.resolve();
    gates.get('/b')!.resolve();
    await settled(calls[2]!);
    expect(events).toEqual(['start /a']);
    gates.get('/a')!.resolve();
    expect((await Promise.all(calls)).map(textOf)).toEqual(['/a', '/b', '/c']);
    expect(events).toEqual(['start /a', 'end /a', 'start /b', 'end /b', 'start /c', 'end /c']);
    const commits = durable.records(addr(A)).flatMap((r) => (r.kind === 'commit' ? r.ops : []));
    expect(commits.map((op) => (op.op === 'put' ? new TextDecoder().decode(op.value) : op.op))).toEqual(['/a', '/b', '/c']);
  });

  it('releases a response only once its writes are durable (the output gate)', async () => {
    const { host, durable } = setup();
    const held = deferred();
    durable.hook = async (write) => { if (write === 'commit') await held.promise; };
    const call = host.call(config, A, textRequest('/inc', 'POST'));
    expect(await settled(call)).toBe(false);
    expect(durable.records(addr(A)).some((r) => r.kind === 'commit')).toBe(false);
    held.resolve();
    expect(textOf(await call)).toBe('1');
    expect(durable.records(addr(A)).filter((r) => r.kind === 'commit')).toHaveLength(1);
  });

  it('discards the response of a failed commit and restarts the actor from the log', async () => {
    const { host, durable, factory } = setup();
    expect(textOf(await host.call(config, A, textRequest('/inc', 'POST')))).toBe('1');
    durable.hook = (write) => { if (write === 'commit') throw new Error('nats: timeout'); };
    await expect(host.call(config, A, textRequest('/inc', 'POST'))).rejects.toThrow(/storage write failed: nats: timeout/);
    expect(factory.of(A)[0]!.disposedAs).toBe('write-failed');
    expect(host.isActive(keyOf(A))).toBe(false);
    durable.hook = undefined;
    // The new activation starts from the log, where the failed write never landed.
    expect(textOf(await host.call(config, A, textRequest('/read')))).toBe('1');
    expect(factory.of(A)).toHaveLength(2);
  });

  it('drops the activation of a superseded owner: its write is fenced and never acknowledged', async () => {
    const { host, durable, factory, lines } = setup();
    await host.call(config, A, textRequest('/inc', 'POST'));
    const taken = await durable.steal(addr(A), 'agent-b');
    const refused = host.call(config, A, textRequest('/inc', 'POST'));
    await expect(refused).rejects.toBeInstanceOf(NotHereError);
    await expect(refused).rejects.toThrow(/moved to another agent/);
    expect(durable.fenced).toEqual([expect.objectContaining({ write: 'commit', epoch: 1 })]);
    // Nothing of the stale owner after the new owner's claim.
    expect(durable.records(addr(A)).filter((r) => r.seq > taken.seq)).toEqual([]);
    expect(factory.of(A)[0]!.disposedAs).toBe('fenced');
    expect(host.isActive(keyOf(A))).toBe(false);
    expect(lines.some((l) => l.level === 'warn' && String(l.msg).includes('fenced'))).toBe(true);
    // Asked again (the ring sent the call back), it claims the actor over the other owner's epoch.
    expect(textOf(await host.call(config, A, textRequest('/read')))).toBe('1');
    expect(durable.records(addr(A)).at(-1)).toMatchObject({ kind: 'claim', agent: 'agent-a', epoch: taken.epoch + 1 });
  });

  it("drops the writes of a request whose code failed, and resets the actor only when it was reset", async () => {
    let fail: Error | undefined;
    const { host, durable, factory } = setup({
      fetch(req, actor) {
        if (new URL(req.url).pathname === '/read') return textResponse(200, actor.storage.get('count') ?? '0');
        actor.storage.put('count', String(Number(actor.storage.get('count') ?? '0') + 1));
        if (fail) throw fail;
        return textResponse(200, 'ok');
      },
    });
    await host.call(config, A, textRequest('/inc', 'POST'));
    fail = new TypeError('boom');
    await expect(host.call(config, A, textRequest('/inc', 'POST'))).rejects.toThrow('boom');
    expect(factory.of(A)).toHaveLength(1);
    expect(textOf(await host.call(config, A, textRequest('/read')))).toBe('1');
    expect(durable.records(addr(A)).filter((r) => r.kind === 'commit')).toHaveLength(1);

    fail = new ActorResetError(`${config.namespace}/${config.name}`, A, 'exceeded its memory limit');
    await expect(host.call(config, A, textRequest('/inc', 'POST'))).rejects.toBeInstanceOf(ActorResetError);
    expect(factory.of(A)[0]!.disposedAs).toBe('reset');
    fail = undefined;
    expect(textOf(await host.call(config, A, textRequest('/read')))).toBe('1');
    expect(factory.of(A)).toHaveLength(2);
  });

  it('drain refuses new calls, lets in-flight ones finish and releases every actor', async () => {
    const gate = deferred();
    const { host, durable, factory } = setup({
      async fetch(req, actor) {
        if (new URL(req.url).pathname === '/slow') await gate.promise;
        actor.storage.put('seen', req.url);
        return textResponse(200, 'done');
      },
    });
    await host.call(config, B, textRequest('/fast'));
    const inflight = host.call(config, A, textRequest('/slow'));
    await settled(inflight);
    const drained = host.drain();
    await expect(host.call(config, B, textRequest('/fast'))).rejects.toBeInstanceOf(NotHereError);
    await expect(host.call(config, idOf(3), textRequest('/fast'))).rejects.toBeInstanceOf(NotHereError);
    expect(await settled(drained)).toBe(false);
    gate.resolve();
    expect(textOf(await inflight)).toBe('done');
    expect((await drained).sort()).toEqual([keyOf(A), keyOf(B)]);
    for (const id of [A, B]) {
      const recs = durable.records(addr(id));
      expect(recs.at(-1)).toMatchObject({ kind: 'release', agent: 'agent-a' });
      expect(recs.at(-2)).toMatchObject({ kind: 'commit' });
      expect(factory.of(id)[0]!.disposedAs).toBe('drain');
    }
    expect(factory.of(idOf(3))).toHaveLength(0);
    expect(host.size).toBe(0);
  });

  it('runs an alarm only while it is set for that time, clears it and commits', async () => {
    const T = Date.UTC(2026, 0, 1);
    const { host, durable, factory, alarmsSet } = setup({
      fetch(_req, actor) { actor.storage.setAlarm(T); return textResponse(200, 'set'); },
      alarm(_retry, actor) { actor.storage.put('rang', 'yes'); },
    });
    await host.call(config, A, textRequest('/set'));
    expect(alarmsSet).toEqual([{ id: A, time: null }, { id: A, time: T }]);
    expect(await host.alarm(config, A, T + 1, 0)).toBe(false);
    expect(factory.of(A)[0]!.alarms).toEqual([]);
    expect(await host.alarm(config, A, T, 2)).toBe(true);
    expect(factory.of(A)[0]!.alarms).toEqual([2]);
    expect(alarmsSet.at(-1)).toEqual({ id: A, time: null });
    const last = durable.records(addr(A)).at(-1);
    expect(last).toMatchObject({ kind: 'commit' });
    expect(last?.kind === 'commit' && last.ops.map((o) => o.op)).toEqual(['put', 'alarm']);
    expect((await durable.load(addr(A))).state.alarm).toBeNull();
  });

  it('announces an alarm with the id\'s name the call carried, and gives that name to the activation an alarm starts', async () => {
    const T = Date.UTC(2026, 0, 1);
    const named = new ActorIds(config.uid).idFromName('room-1').hex;
    const { host, durable, factory, alarmsSet } = setup({ fetch(_req, actor) { actor.storage.setAlarm(T); return textResponse(200, 'set'); } });
    await host.call(config, named, { ...textRequest('/set'), headers: [[ACTOR_NAME_HEADER, 'room-1']] });
    expect(factory.of(named)[0]!.name).toBe('room-1');
    expect(alarmsSet.at(-1)).toEqual({ id: named, time: T, name: 'room-1' });
    await host.stop();
    // The next owner, with the actor not in memory: the alarm index gave it the name.
    const again = setup(counter, { durable });
    expect(await again.host.alarm(config, named, T, 0, 'room-1')).toBe(true);
    expect(again.factory.of(named)[0]!.name).toBe('room-1');
    // A name the id was not made from is not given.
    await again.host.stop();
    const third = setup({ fetch(_req, actor) { actor.storage.setAlarm(T); return textResponse(200, 'set'); } }, { durable });
    await third.host.call(config, named, textRequest('/set'));
    await third.host.stop();
    const fourth = setup(counter, { durable });
    expect(await fourth.host.alarm(config, named, T, 0, 'room-2')).toBe(true);
    expect(fourth.factory.of(named)[0]!.name).toBeUndefined();
    await fourth.host.stop();
    // Prewarmed after a handover (no call): the name the alarm index knows, checked against the id.
    const known = setup(counter, { durable, knownName: () => 'room-1' });
    await known.host.prewarm(config, named);
    expect(known.factory.of(named)[0]!.name).toBe('room-1');
    await known.host.stop();
    const wrong = setup(counter, { durable, knownName: () => 'room-2' });
    await wrong.host.prewarm(config, named);
    expect(wrong.factory.of(named)[0]!.name).toBeUndefined();
  });

  it('re-announces the alarm the log holds when an actor activates', async () => {
    const T = Date.UTC(2026, 0, 2);
    const { durable } = setup();
    const { epoch, seq } = await durable.claim(addr(A), 'agent-old', 0, 0);
    await durable.commit(addr(A), epoch, seq, [{ op: 'alarm', time: T }]);
    const { host, alarmsSet } = setup(counter, { durable });
    await host.call(config, A, textRequest('/read'));
    expect(alarmsSet).toEqual([{ id: A, time: T }]);
  });

  it("commits the constructor's writes before the first request runs", async () => {
    const { host, durable } = setup({
      construct(actor) { actor.storage.put('count', '41'); },
      fetch: counter.fetch!,
    });
    expect(textOf(await host.call(config, A, textRequest('/inc', 'POST')))).toBe('42');
    const commits = durable.records(addr(A)).filter((r) => r.kind === 'commit');
    expect(commits).toHaveLength(2);
    expect(commits[0]!.kind === 'commit' && new TextDecoder().decode((commits[0]!.ops[0] as { value: Uint8Array }).value)).toBe('41');
  });

  it('compacts the log every compactEvery commits and keeps writing after the snapshot', async () => {
    const { host, durable } = setup(counter, { compactEvery: 2 });
    for (let i = 0; i < 5; i++) await host.call(config, A, textRequest('/inc', 'POST'));
    const recs = durable.records(addr(A));
    expect(recs[0]).toMatchObject({ kind: 'snapshot', agent: 'agent-a' });
    expect(durable.fenced).toEqual([]);
    expect(new TextDecoder().decode((await durable.load(addr(A))).state.values.get('count'))).toBe('5');
  });

  it('retries a claim that raced another writer, and gives the call back when it keeps losing', async () => {
    const { host, durable, factory } = setup();
    let races = 2;
    durable.hook = (write, a) => {
      if (write === 'claim' && races-- > 0) throw new FencedError(a, 'the log moved on');
    };
    expect(textOf(await host.call(config, A, textRequest('/inc', 'POST')))).toBe('1');
    races = 10;
    await expect(host.call(config, B, textRequest('/inc', 'POST'))).rejects.toBeInstanceOf(NotHereError);
    expect(factory.of(B)).toHaveLength(0);
  });

  it('hands over an actor idle for longer than its idle timeout, unless it holds a WebSocket', async () => {
    vi.useFakeTimers();
    const { host, durable, factory } = setup();
    await host.call(config, A, textRequest('/inc', 'POST'));
    await host.call(config, B, textRequest('/inc', 'POST'));
    factory.of(B)[0]!.openSockets = 1;
    await vi.advanceTimersByTimeAsync((config.idleTimeoutSeconds - 1) * 1000);
    expect(host.keys().sort()).toEqual([keyOf(A), keyOf(B)]);
    await vi.advanceTimersByTimeAsync(2000);
    expect(host.keys()).toEqual([keyOf(B)]);
    expect(factory.of(A)[0]!.disposedAs).toBe('idle');
    expect(durable.records(addr(A)).at(-1)).toMatchObject({ kind: 'release', agent: 'agent-a' });
  });
});

// Issue 13: a superseded activation serves nothing, not even a read, and runs no alarm.
describe('actor host: pipelined commits', () => {
  /** The text of each put of `key` in the actor's commit records, a list per record. */
  const puts = (durable: FakeActorLog, id: string) => durable.records(addr(id))
    .filter((r) => r.kind === 'commit')
    .map((r) => (r.kind === 'commit' ? r.ops.map((op) => (op.op === 'put' ? new TextDecoder().decode(op.value) : op.op)) : []));

  it('opens the input gate while a commit is in flight, and folds the writes made meanwhile into the next commit', async () => {
    const ran: string[] = [];
    const { host, durable } = setup({
      fetch(req, actor) {
        const path = new URL(req.url).pathname;
        ran.push(path);
        actor.storage.put('last', path);
        return textResponse(200, path);
      },
    });
    await host.call(config, A, textRequest('/warm'));
    const held = deferred();
    durable.hook = async (write) => { if (write === 'commit') await held.promise; };
    const first = host.call(config, A, textRequest('/a'));
    await settled(first);
    const later = ['/b', '/c', '/d'].map((p) => host.call(config, A, textRequest(p)));
    await settled(later[2]!);
    // Every handler ran while /a's commit was held, and no response went out.
    expect(ran).toEqual(['/warm', '/a', '/b', '/c', '/d']);
    for (const call of [first, ...later]) expect(await settled(call)).toBe(false);
    durable.hook = undefined;
    held.resolve();
    expect((await Promise.all([first, ...later])).map(textOf)).toEqual(['/a', '/b', '/c', '/d']);
    // /b, /c and /d went in one log write, after /a's, in the order they ran.
    expect(puts(durable, A)).toEqual([['/warm'], ['/a'], ['/b', '/c', '/d']]);
  });

  it('holds a read that ran behind an unacknowledged write until that write is durable, with no log check of its own', async () => {
    const { host, durable } = setup();
    await host.call(config, A, textRequest('/inc', 'POST'));
    const held = deferred();
    durable.hook = async (write) => { if (write === 'commit') await held.promise; };
    const write = host.call(config, A, textRequest('/inc', 'POST'));
    await settled(write);
    const checks = durable.checks.length;
    const read = host.call(config, A, textRequest('/read'));
    // The read saw count 2, which is not durable yet: it may not be answered.
    expect(await settled(read)).toBe(false);
    held.resolve();
    expect(textOf(await read)).toBe('2');
    expect(textOf(await write)).toBe('2');
    expect(durable.checks.length).toBe(checks);
  });

  it('fails every response behind a fenced commit: none of their writes lands, and the activation goes', async () => {
    const { host, durable, factory } = setup();
    await host.call(config, A, textRequest('/inc', 'POST'));
    const held = deferred();
    durable.hook = async (write) => { if (write === 'commit') await held.promise; };
    const calls = [textRequest('/inc', 'POST'), textRequest('/inc', 'POST'), textRequest('/read'), textRequest('/inc', 'POST')]
      .map((r) => host.call(config, A, r));
    await settled(calls[3]!);
    durable.hook = undefined;
    const taken = await durable.steal(addr(A), 'agent-b');
    held.resolve();
    for (const call of calls) await expect(call).rejects.toBeInstanceOf(NotHereError);
    expect(durable.records(addr(A)).filter((r) => r.seq > taken.seq)).toEqual([]);
    // One refused write: the folded one behind it was never sent.
    expect(durable.fenced).toHaveLength(1);
    expect(factory.of(A)[0]!.disposedAs).toBe('fenced');
    // The next call claims it again and reads what the log holds: the first write only.
    expect(textOf(await host.call(config, A, textRequest('/read')))).toBe('1');
  });

  it('fails a response whose handler was still running when a commit before it failed', async () => {
    const gate = deferred();
    let entered = deferred();
    const { host, durable } = setup({
      async fetch(req, actor) {
        if (new URL(req.url).pathname === '/slow') {
          entered.resolve();
          await gate.promise;
          // Its memory holds the failed write: what it reads must not be answered.
          return textResponse(200, actor.storage.get('count') ?? '0');
        }
        return counter.fetch!(req, actor);
      },
    });
    await host.call(config, A, textRequest('/inc', 'POST'));
    durable.hook = (write) => { if (write === 'commit') return entered.promise.then(() => { throw new Error('nats: timeout'); }); };
    const write = host.call(config, A, textRequest('/inc', 'POST'));
    const slow = host.call(config, A, textRequest('/slow'));
    await expect(write).rejects.toThrow(/storage write failed: nats: timeout/);
    durable.hook = undefined;
    gate.resolve();
    await expect(slow).rejects.toThrow(/storage write failed|was deactivated|isolate/);
    entered = deferred();
    expect(textOf(await host.call(config, A, textRequest('/read')))).toBe('1');
  });

  it('does not take its own commit, landed but not yet acknowledged, for another writer\'s', async () => {
    const { host, durable, factory } = setup();
    await host.call(config, A, textRequest('/inc', 'POST'));
    const check = deferred();
    const ack = deferred();
    let landed = deferred();
    durable.hook = async (op) => { if (op === 'check') await check.promise; };
    const commit = durable.commit.bind(durable);
    durable.commit = async (...args) => {
      const seq = await commit(...args);
      landed.resolve();
      await ack.promise;
      return seq;
    };
    // The read's log check is sent before the write's commit lands, and answered after.
    const read = host.call(config, A, textRequest('/read'));
    await settled(read);
    const write = host.call(config, A, textRequest('/inc', 'POST'));
    await landed.promise;
    check.resolve();
    await settled(read);
    ack.resolve();
    expect(textOf(await read)).toBe('1');
    expect(textOf(await write)).toBe('2');
    expect(host.isActive(keyOf(A))).toBe(true);
    expect(factory.of(A)).toHaveLength(1);
    landed = deferred();
  });

  it('hands an actor over only once the commit its last request left in flight is acknowledged', async () => {
    const gate = deferred();
    const { host, durable } = setup(gatedCounter('/slow', gate.promise));
    await host.call(config, A, textRequest('/inc', 'POST'));
    const held = deferred();
    durable.hook = async (write) => { if (write === 'commit') await held.promise; };
    // Running when the drain begins; its commit is sent once the handler returns.
    const call = host.call(config, A, textRequest('/slow', 'POST'));
    await settled(call);
    const drained = host.drain();
    gate.resolve();
    expect(await settled(drained)).toBe(false);
    durable.hook = undefined;
    held.resolve();
    expect(textOf(await call)).toBe('2');
    await drained;
    expect(durable.fenced).toEqual([]);
    expect(durable.records(addr(A)).at(-1)).toMatchObject({ kind: 'release', agent: 'agent-a' });
  });

  it('compacts once no commit is outstanding: the snapshot holds no write that was still in flight', async () => {
    // Every commit wants a compaction: the first is acknowledged while the next, folded, waits.
    const { host, durable } = setup(counter, { compactEvery: 1 });
    const dec = (v: Uint8Array | undefined) => new TextDecoder().decode(v);
    // Each snapshot's count beside the count the log held when it was written.
    const snapshots: [string, string][] = [];
    const compact = durable.compact.bind(durable);
    durable.compact = async (a, epoch, seq, state, agent) => {
      snapshots.push([dec(state.values.get('count')), dec((await durable.load(a)).state.values.get('count'))]);
      return compact(a, epoch, seq, state, agent);
    };
    const held = deferred();
    durable.hook = async (write) => { if (write === 'commit') await held.promise; };
    const calls = Array.from({ length: 9 }, () => host.call(config, A, textRequest('/inc', 'POST')));
    await settled(calls[8]!);
    durable.hook = undefined;
    held.resolve();
    expect((await Promise.all(calls)).map(textOf)).toEqual(['1', '2', '3', '4', '5', '6', '7', '8', '9']);
    for (let i = 0; i < 6; i++) await host.call(config, A, textRequest('/inc', 'POST'));
    expect(durable.fenced).toEqual([]);
    expect(durable.records(addr(A))[0]).toMatchObject({ kind: 'snapshot' });
    expect(snapshots.length).toBeGreaterThan(1);
    for (const [snap, log] of snapshots) expect(snap).toBe(log);
    expect(dec((await durable.load(addr(A))).state.values.get('count'))).toBe('15');
  });
});

describe('actor host: the read barrier', () => {
  const enc = new TextEncoder();
  /** Another agent claims the actor and writes `count` (as its own requests would). */
  async function takeOver(durable: FakeActorLog, id: string, count: string) {
    const { epoch, seq } = await durable.steal(addr(id), 'agent-b');
    await durable.commit(addr(id), epoch, seq, [{ op: 'put', key: 'count', value: enc.encode(count) }]);
  }

  it('releases a read only after the log is seen to end at its own last write', async () => {
    const { host, durable } = setup();
    await host.call(config, A, textRequest('/inc', 'POST'));
    const held = deferred();
    durable.hook = async (op) => { if (op === 'check') await held.promise; };
    const read = host.call(config, A, textRequest('/read'));
    expect(await settled(read)).toBe(false);
    held.resolve();
    expect(textOf(await read)).toBe('1');
    // A write is proven by its fenced commit: no extra round trip.
    const before = durable.checks.length;
    await host.call(config, A, textRequest('/inc', 'POST'));
    expect(durable.checks.length).toBe(before);
  });

  it('shares one log check among concurrent reads: a burst costs two checks, not one each', async () => {
    const { host, durable } = setup();
    await host.call(config, A, textRequest('/inc', 'POST'));
    let held = deferred();
    durable.hook = async (op) => { if (op === 'check') await held.promise; };
    const first = host.call(config, A, textRequest('/read'));
    await settled(first);
    // These finish while the first check is in flight: they need a check sent after them.
    const burst = Array.from({ length: 10 }, () => host.call(config, A, textRequest('/read')));
    await settled(burst[9]!);
    const before = durable.checks.length;
    const firstHeld = held;
    held = deferred();
    firstHeld.resolve();
    expect(textOf(await first)).toBe('1');
    held.resolve();
    expect((await Promise.all(burst)).map(textOf)).toEqual(Array(10).fill('1'));
    expect(durable.checks.length - before).toBe(2);
  });

  it('answers no read from a superseded activation: it deactivates, and the next call reads the new owner\'s writes', async () => {
    const { host, durable, factory, lines } = setup();
    await host.call(config, A, textRequest('/inc', 'POST'));
    await takeOver(durable, A, '7');
    const stale = host.call(config, A, textRequest('/read'));
    await expect(stale).rejects.toBeInstanceOf(NotHereError);
    expect(factory.of(A)[0]!.disposedAs).toBe('fenced');
    expect(host.isActive(keyOf(A))).toBe(false);
    expect(lines.some((l) => String(l.msg).startsWith('actor superseded'))).toBe(true);
    // Nothing was written by the stale activation.
    expect(durable.fenced).toEqual([]);
    expect(textOf(await host.call(config, A, textRequest('/read')))).toBe('7');
  });

  it('fences a read whose actor was claimed while the read ran', async () => {
    const gate = deferred();
    const { host, durable } = setup(gatedCounter('/slowread', gate.promise));
    await host.call(config, A, textRequest('/inc', 'POST'));
    const read = host.call(config, A, textRequest('/slowread'));
    await settled(read);
    await takeOver(durable, A, '5');
    gate.resolve();
    await expect(read).rejects.toBeInstanceOf(NotHereError);
  });

  it('fences an error thrown by the actor like a read', async () => {
    const { host, durable } = setup({
      fetch(req, actor) {
        if (new URL(req.url).pathname === '/throw') throw new TypeError(`count is ${actor.storage.get('count') ?? '0'}`);
        return counter.fetch!(req, actor);
      },
    });
    await host.call(config, A, textRequest('/inc', 'POST'));
    await expect(host.call(config, A, textRequest('/throw'))).rejects.toThrow('count is 1');
    await takeOver(durable, A, '3');
    await expect(host.call(config, A, textRequest('/throw'))).rejects.toBeInstanceOf(NotHereError);
  });

  it('answers no read it cannot prove while the log is unreachable, and keeps the activation', async () => {
    const { host, durable, factory } = setup();
    await host.call(config, A, textRequest('/inc', 'POST'));
    durable.hook = (op) => { if (op === 'check') throw new Error('nats: disconnected'); };
    await expect(host.call(config, A, textRequest('/read'))).rejects.toThrow('nats: disconnected');
    expect(host.isActive(keyOf(A))).toBe(true);
    durable.hook = undefined;
    expect(textOf(await host.call(config, A, textRequest('/read')))).toBe('1');
    expect(factory.of(A)).toHaveLength(1);
  });

  it('runs no alarm handler on a superseded activation', async () => {
    const T = Date.UTC(2026, 0, 3);
    const { host, durable, factory } = setup({
      fetch(_req, actor) { actor.storage.setAlarm(T); return textResponse(200, 'set'); },
      alarm(_retry, actor) { actor.storage.put('rang', 'yes'); },
    });
    await host.call(config, A, textRequest('/set'));
    // The new owner ran the alarm and cleared it; this activation still has it set.
    const { epoch, seq } = await durable.steal(addr(A), 'agent-b');
    await durable.commit(addr(A), epoch, seq, [{ op: 'put', key: 'rang', value: enc.encode('yes') }, { op: 'alarm', time: null }]);
    await expect(host.alarm(config, A, T, 0)).rejects.toBeInstanceOf(NotHereError);
    expect(factory.of(A)[0]!.alarms).toEqual([]);
    // Retried (the alarms' backoff), a fresh activation reads the cleared alarm and runs nothing.
    expect(await host.alarm(config, A, T, 1)).toBe(false);
    expect(factory.of(A).flatMap((i) => i.alarms)).toEqual([]);
  });

  it('after an event-loop stall, drops superseded activations at once and proves the others before they run anything', async () => {
    const { host, durable, factory } = setup();
    await host.call(config, A, textRequest('/inc', 'POST'));
    await host.call(config, B, textRequest('/inc', 'POST'));
    await takeOver(durable, B, '9');
    // The monotonic clock jumps past the stall bound (the process was stopped).
    const real = performance.now.bind(performance);
    const spy = vi.spyOn(performance, 'now').mockImplementation(() => real() + STALL_MS * 5);
    try {
      const checks = durable.checks.length;
      expect(textOf(await host.call(config, A, textRequest('/inc', 'POST')))).toBe('2');
      // A proved itself before its write ran; B, never called, was checked and dropped.
      expect(durable.checks.slice(checks).map((a) => a.id)).toEqual(expect.arrayContaining([A, B]));
      await vi.waitFor(() => expect(host.isActive(keyOf(B))).toBe(false));
      expect(factory.of(B)[0]!.disposedAs).toBe('fenced');
      expect(host.keys()).toEqual([keyOf(A)]);
    } finally {
      spy.mockRestore();
    }
  });
});
