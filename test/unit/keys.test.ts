import { describe, expect, it } from 'vitest';
import {
  actorClassKey, actorClassPrefix, actorClassRef, actorInstanceKey, actorInstanceKeyOf, agentKey, alarmKey,
  MalformedKeyError, parseActorClassKey, parseActorClassRef, parseActorInstanceKey, parseAgentKey, parseAlarmKey,
  parseOrSkip, parseWorkerKey, parseWorkerRef, workerKey, workerRef,
} from '../../common/keys.js';
import {
  ActorDeactivationReasons, ConditionReasons, ConditionTypes, type ActorDeactivationReason,
} from '../../common/reasons.js';
import { disposalReasonOf } from '../../node-agent/actors/isolate.js';

// Keys are wire format: agents and operators of different versions read each other's KV
// keys, so the exact shapes are pinned here, and every parser refuses what its builder
// could not have made.

const ID = 'ab'.repeat(32);

describe('keys: wire shapes', () => {
  it('builds the shapes every agent and the operator already use', () => {
    expect(workerRef('team-a', 'hello')).toBe('team-a/hello');
    expect(workerKey('team-a', 'hello')).toBe('team-a.hello');
    expect(actorClassRef('team-a', 'rooms')).toBe('team-a/rooms');
    expect(actorClassKey('team-a', 'rooms')).toBe('team-a.rooms');
    expect(actorInstanceKey('team-a', 'rooms', ID)).toBe(`team-a/rooms/${ID}`);
    expect(actorInstanceKeyOf({ namespace: 'team-a', actor: 'rooms', id: ID })).toBe(`team-a/rooms/${ID}`);
    expect(actorClassPrefix('team-a', 'rooms')).toBe('team-a/rooms/');
    expect(alarmKey('team-a', 'rooms', ID)).toBe(`team-a.rooms.${ID}`);
    expect(agentKey('eu-west', 'agent-1')).toBe('eu-west.agent-1');
  });

  it('turns an agent name into one NATS token in its key', () => {
    expect(agentKey('eu-west', 'node-1.example.com/pod a')).toBe('eu-west.node-1_example_com_pod_a');
    expect(parseAgentKey(agentKey('eu-west', 'node-1.example.com'))).toEqual({ region: 'eu-west', agent: 'node-1_example_com' });
  });

  it('an actor instance key starts with its class prefix, and no other class shares it', () => {
    expect(actorInstanceKey('ns', 'rooms', ID).startsWith(actorClassPrefix('ns', 'rooms'))).toBe(true);
    expect(actorInstanceKey('ns', 'rooms-2', ID).startsWith(actorClassPrefix('ns', 'rooms'))).toBe(false);
  });
});

describe('keys: round trips', () => {
  const names = ['a', 'default', 'team-a', '0', 'x'.repeat(63), 'a-b-c-1'];
  it('parses back every ref and key it builds', () => {
    for (const ns of names) {
      for (const name of names) {
        expect(parseWorkerRef(workerRef(ns, name))).toEqual({ namespace: ns, name });
        expect(parseWorkerKey(workerKey(ns, name))).toEqual({ namespace: ns, name });
        expect(parseActorClassRef(actorClassRef(ns, name))).toEqual({ namespace: ns, name });
        expect(parseActorClassKey(actorClassKey(ns, name))).toEqual({ namespace: ns, name });
        expect(parseActorInstanceKey(actorInstanceKey(ns, name, ID))).toEqual({ namespace: ns, actor: name, id: ID });
        expect(parseAlarmKey(alarmKey(ns, name, ID))).toEqual({ namespace: ns, actor: name, id: ID });
      }
      expect(parseAgentKey(agentKey(ns, 'agent_1-x'))).toEqual({ region: ns, agent: 'agent_1-x' });
    }
  });
});

describe('keys: malformed input', () => {
  const cases: [string, (k: string) => unknown, string[]][] = [
    ['worker ref', parseWorkerRef, ['', 'hello', 'ns/', '/name', 'a/b/c', 'ns.hello', 'NS/hello', 'ns/-x', 'ns/x-', 'ns/a.b', `ns/${'x'.repeat(64)}`, 'ns/hé']],
    ['worker key', parseWorkerKey, ['', 'hello', 'ns.', '.name', 'a.b.c', 'ns/hello', 'ns.Hello', 'ns.a_b']],
    ['actor class ref', parseActorClassRef, ['rooms', 'ns/rooms/extra', 'ns.rooms']],
    ['actor class key', parseActorClassKey, ['rooms', 'ns.rooms.extra', 'ns/rooms']],
    ['actor key', parseActorInstanceKey, ['', 'ns/rooms', `ns/rooms/${ID}/x`, `ns.rooms.${ID}`, 'ns/rooms/abc', `ns/rooms/${ID.toUpperCase()}`, `ns/Rooms/${ID}`, `/rooms/${ID}`, `ns/rooms/${ID}0`]],
    ['alarm key', parseAlarmKey, ['', 'ns.rooms', `ns/rooms/${ID}`, `ns.rooms.${ID}.x`, 'ns.rooms.abc']],
    ['agent key', parseAgentKey, ['', 'eu-west', 'eu-west.', '.agent', 'eu-west.a.b', 'EU.agent', 'eu-west.a b', 'eu-west.a*', 'eu-west.>']],
  ];
  for (const [kind, parse, bad] of cases) {
    it(`${kind}: refuses ${bad.length} malformed keys with a MalformedKeyError naming the key`, () => {
      for (const key of bad) {
        let caught: unknown;
        try { parse(key); } catch (err) { caught = err; }
        expect(caught, JSON.stringify(key)).toBeInstanceOf(MalformedKeyError);
        const e = caught as MalformedKeyError;
        expect(e.name).toBe('MalformedKeyError');
        expect(e.kind).toBe(kind);
        expect(e.key).toBe(key);
        expect(e.message).toContain(`malformed ${kind} ${JSON.stringify(key)}: expected `);
      }
    });
  }

  it('parseOrSkip skips only malformed keys', () => {
    expect(parseOrSkip(parseWorkerKey, 'ns.hello')).toEqual({ namespace: 'ns', name: 'hello' });
    expect(parseOrSkip(parseWorkerKey, 'not-a-key')).toBeUndefined();
    expect(() => parseOrSkip(() => { throw new RangeError('boom'); }, 'ns.hello')).toThrow(RangeError);
  });
});

describe('reasons', () => {
  it('condition types and reasons are spelled as their names (they are API: users match on them)', () => {
    for (const [k, v] of Object.entries({ ...ConditionTypes, ...ConditionReasons })) expect(v).toBe(k);
    expect(Object.keys(ConditionReasons)).toHaveLength(20);
  });

  it('actor deactivation reasons keep their log spellings', () => {
    expect(Object.values(ActorDeactivationReasons).sort()).toEqual(
      ['deleted', 'drain', 'fenced', 'idle', 'new-version', 'reset', 'ring-change', 'shutdown', 'write-failed']);
  });

  it('maps each deactivation reason to the isolate disposal it reads as', () => {
    const want: Record<ActorDeactivationReason, string> = {
      idle: 'idle', 'ring-change': 'replaced', 'new-version': 'replaced', deleted: 'replaced',
      drain: 'shutdown', shutdown: 'shutdown', reset: 'reset', fenced: 'reset', 'write-failed': 'reset',
    };
    for (const r of Object.values(ActorDeactivationReasons)) expect(disposalReasonOf(r), r).toBe(want[r]);
    expect(disposalReasonOf('crash')).toBe('crash');
    expect(disposalReasonOf('cpu')).toBe('cpu');
  });
});
