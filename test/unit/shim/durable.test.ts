import { afterAll, describe, expect, it } from 'vitest';
import { ActorId, ActorIds } from '../../../node-agent/bindings/actor-id.js';
import { ActorIsolate, ActorResetError, type ActorDefinition } from '../../../node-agent/actors/isolate.js';
import { ActorStorage, ActorStorageFullError, compareKeys, decodeValue } from '../../../node-agent/bindings/actor-storage.js';
import type { HostCallbacks } from '../../../node-agent/abi/bridge.js';
import { BundleError, WorkerLimitError, WorkerScriptError } from '../../../node-agent/isolate/worker-isolate.js';
import { activate, actorPool, applyOps, BoundWorker, emptyState, FakeActorHost, request, testHooks, text, workerDef } from './run-actor.js';

// Durable-Object-style actors in real isolates: ids, the namespace binding and stubs,
// state.storage (through the host's ActorStorage), blockConcurrencyWhile, alarms, and
// stub.fetch() reaching the right instance through a test double of the actor router.

const UID = 'f00dfeed-0000-4000-8000-5ecre7-uid-a';
const OTHER_UID = 'f00dfeed-0000-4000-8000-5ecre7-uid-b';
const TARGET = { namespace: 'default', actor: 'counters', uid: UID };
const OTHER = { namespace: 'default', actor: 'rooms', uid: OTHER_UID };
const ID = new ActorIds(UID).idFromName('test').hex;

const live: { dispose(reason: 'shutdown'): void }[] = [];
afterAll(() => { for (const x of live) x.dispose('shutdown'); });

/**
 * An actor class whose fetch runs steps[n] for a request to /n (each the body of an async
 * function seeing state, storage, env, request and `self`, the instance), answering with
 * what it returns as JSON, or the error it throws.
 */
function stepsActor(steps: string[], opts: { ctor?: string; members?: string } = {}): string {
  const cases = steps.map((body, i) => `case ${i}: return (async () => {\n${body}\n})();`).join('\n');
  return `
export class T {
  constructor(state, env) { this.state = state; this.env = env; ${opts.ctor ?? ''} }
  async fetch(request) {
    const self = this, state = this.state, storage = this.state.storage, env = this.env;
    const run = () => { switch (Number(new URL(request.url).pathname.slice(1))) { ${cases} } };
    try {
      const value = await run();
      return new Response(JSON.stringify({ value: value === undefined ? null : value }));
    } catch (err) {
      return new Response(JSON.stringify({ error: { name: String(err?.name), message: String(err?.message), type: String(err?.constructor?.name) } }));
    }
  }
  ${opts.members ?? ''}
}
export default { fetch() { return new Response('not an actor'); } };`;
}

class Threw extends Error {
  constructor(readonly thrown: { name: string; message: string; type: string }) { super(`${thrown.type}: ${thrown.message}`); }
}

async function step<T = unknown>(a: ActorIsolate, n: number): Promise<T> {
  const res = await a.fetch(request(`http://actor/${n}`));
  const out = JSON.parse(text(res)) as { value?: T; error?: Threw['thrown'] };
  if (out.error) throw new Threw(out.error);
  return out.value as T;
}

async function thrown(a: ActorIsolate, n: number): Promise<Threw['thrown']> {
  try {
    const v = await step(a, n);
    throw new Error(`expected step ${n} to throw, it returned ${JSON.stringify(v)}`);
  } catch (err) {
    if (err instanceof Threw) return err.thrown;
    throw err;
  }
}

const def = (source: string, extra: Partial<ActorDefinition> = {}): ActorDefinition => ({ worker: workerDef(source), className: 'T', actor: 'default/counters', ...extra });

async function actor(steps: string[], opts: { ctor?: string; members?: string; maxBytes?: number; state?: ConstructorParameters<typeof ActorStorage>[0] } = {}): Promise<ActorIsolate> {
  const a = await activate(def(stepsActor(steps, opts)), ID, { maxBytes: opts.maxBytes, state: opts.state });
  live.push(a);
  return a;
}

describe('ids (host side)', () => {
  it('idFromName is 64 lowercase hex, the same for the same (uid, name) on any agent, different across names and uids', () => {
    const a = new ActorIds(UID).idFromName('room-1');
    const b = new ActorIds(UID).idFromName('room-1');
    expect(a.hex).toMatch(/^[0-9a-f]{64}$/);
    expect(a.toString()).toBe(a.hex);
    expect(a.equals(b)).toBe(true);
    expect(a.name).toBe('room-1');
    expect(new ActorIds(UID).idFromName('room-2').hex).not.toBe(a.hex);
    expect(new ActorIds(OTHER_UID).idFromName('room-1').hex).not.toBe(a.hex);
    // Names are any strings: empty, non-ASCII, long.
    expect(new ActorIds(UID).idFromName('').hex).toMatch(/^[0-9a-f]{64}$/);
    expect(new ActorIds(UID).idFromName('ünïcødé 😀').hex).not.toBe(new ActorIds(UID).idFromName('unicode').hex);
    expect(() => new ActorIds(UID).idFromName('x'.repeat(4097))).toThrow(/4097 bytes long; the limit is 4096/);
  });

  it('newUniqueId is random and valid; idFromString accepts exactly the namespace\'s ids', () => {
    const ids = new ActorIds(UID);
    const u1 = ids.newUniqueId();
    const u2 = ids.newUniqueId();
    expect(u1.hex).not.toBe(u2.hex);
    expect(u1.name).toBeUndefined();
    expect(ids.idFromString(u1.hex).equals(u1)).toBe(true);
    expect(ids.idFromString(u1.hex.toUpperCase()).hex).toBe(u1.hex);
    expect(ids.idFromString(ids.idFromName('n').hex)).toBeInstanceOf(ActorId);

    const foreign = new ActorIds(OTHER_UID).idFromName('n').hex;
    expect(() => ids.idFromString(foreign)).toThrow(TypeError);
    expect(() => ids.idFromString(foreign)).toThrow(/is not an id of this actor namespace/);
    const altered = u1.hex.slice(0, 10) + (u1.hex[10] === '0' ? '1' : '0') + u1.hex.slice(11);
    expect(() => ids.idFromString(altered)).toThrow(/not an id of this actor namespace/);
    for (const bad of ['', 'abc', 'g'.repeat(64), `${u1.hex}0`, ' '.repeat(64)]) {
      expect(() => ids.idFromString(bad)).toThrow(/is not an actor id \(an id is 64 hexadecimal characters\)/);
    }
    for (const bad of [foreign, altered, 'abc']) {
      try { ids.idFromString(bad); } catch (err) { expect(String(err)).not.toContain(UID); }
    }
  });
});

describe('the namespace binding in a worker', () => {
  const host = new FakeActorHost();
  afterAll(() => host.close());

  it('idFromName / newUniqueId / idFromString / get give ids and stubs as Durable Objects do; the host computes ids', async () => {
    const w = await BoundWorker.load(`export default { async fetch(request, env) {
      const ns = env.COUNTERS;
      const a = ns.idFromName('alice'), a2 = ns.idFromName('alice'), u = ns.newUniqueId();
      const parsed = ns.idFromString(a.toString());
      const stub = ns.get(a);
      const fromOther = env.SAME.get(env.SAME.idFromName('alice'));
      const errors = [];
      for (const f of [() => ns.idFromString('nope'), () => ns.idFromString(env.ROOMS.idFromName('alice').toString()), () => ns.get(env.ROOMS.idFromName('alice')),
                       () => ns.get(a.toString()), () => ns.get({ toString: () => a.toString() }), () => { ns.foo = 1; if (!('foo' in ns)) throw new TypeError('frozen'); }]) {
        try { f(); errors.push('no error'); } catch (e) { errors.push(e.constructor.name + ': ' + e.message); }
      }
      return Response.json({
        a: a.toString(), name: a.name, same: a.equals(a2), eqParsed: parsed.equals(a), parsedName: parsed.name ?? null,
        u: u.toString(), uName: u.name ?? null, uEqA: u.equals(a), stubId: stub.id.toString(), stubName: stub.name, stubIdIsA: stub.id === a,
        crossBindingSameActor: fromOther.id.toString(), keys: Object.keys(ns).sort(), frozen: Object.isFrozen(ns) && Object.isFrozen(a) && Object.isFrozen(stub),
        byName: ns.getByName('alice').id.toString(), errors,
      });
    } }`, { COUNTERS: TARGET, SAME: { ...TARGET, actor: 'counters' }, ROOMS: OTHER }, host);
    live.push(w);
    const out = JSON.parse((await w.fetch('http://w/')).text);
    const ids = new ActorIds(UID);
    expect(out.a).toBe(ids.idFromName('alice').hex);
    expect(out).toMatchObject({
      name: 'alice', same: true, eqParsed: true, parsedName: null, uName: null, uEqA: false,
      stubId: out.a, stubName: 'alice', stubIdIsA: true, crossBindingSameActor: out.a, frozen: true, byName: out.a,
      keys: ['get', 'getByName', 'idFromName', 'idFromString', 'newUniqueId'],
    });
    expect(ids.owns(out.u)).toBe(true);
    expect(out.errors[0]).toMatch(/^TypeError: env\.COUNTERS\.idFromString\(\): "nope" is not an actor id/);
    expect(out.errors[1]).toMatch(/^TypeError: env\.COUNTERS\.idFromString\(\): ".*" is not an id of this actor namespace/);
    expect(out.errors[2]).toMatch(/^TypeError: env\.COUNTERS\.get\(\): ".*" is not an id of this actor namespace/);
    expect(out.errors[3]).toMatch(/^TypeError: env\.COUNTERS\.get\(\): expected an id made by idFromName\(\), newUniqueId\(\) or idFromString\(\), not a string/);
    expect(out.errors[4]).toMatch(/^TypeError: env\.COUNTERS\.get\(\): expected an id/);
    expect(out.errors[5]).toMatch(/^TypeError/);
    expect(host.calls).toEqual([]);
  });

  it('the DurableActor\'s uid never reaches the isolate: not in env, ids, stubs, errors or anything a callback returns', async () => {
    const w = await BoundWorker.load(`export default { async fetch(request, env) {
      const seen = new Set(), out = [];
      const walk = (v, depth) => {
        if (depth > 6 || v === null || (typeof v !== 'object' && typeof v !== 'function')) { if (typeof v === 'string') out.push(v); return; }
        if (seen.has(v)) return; seen.add(v);
        if (typeof v === 'function') { try { out.push(Function.prototype.toString.call(v)); } catch {} }
        for (const k of Reflect.ownKeys(v)) {
          out.push(String(k));
          let d; try { d = Object.getOwnPropertyDescriptor(v, k); } catch { continue; }
          if (d && 'value' in d) walk(d.value, depth + 1);
        }
        walk(Object.getPrototypeOf(v), depth + 1);
      };
      const ns = env.COUNTERS, id = ns.idFromName('x'), u = ns.newUniqueId();
      walk(env, 0); walk(id, 0); walk(u, 0); walk(ns.get(id), 0); walk(globalThis, 0);
      out.push(JSON.stringify(env), JSON.stringify(id), String(id), String(ns.get(u).id));
      for (const f of [() => ns.idFromString(env.ROOMS.newUniqueId().toString()), () => ns.get(env.ROOMS.idFromName('x')), () => ns.idFromString('0'.repeat(64))]) {
        try { f(); } catch (e) { out.push(String(e.message), String(e.stack)); }
      }
      return new Response(out.join('\\n'));
    } }`, { COUNTERS: TARGET, ROOMS: OTHER }, host);
    live.push(w);
    // Everything the host callbacks hand the isolate is recorded too.
    const returned: string[] = [];
    const cbs = w.isolate.callbacks();
    const recording = Object.fromEntries(Object.entries(cbs).map(([name, fn]) => [name, (...args: unknown[]) => {
      try {
        const r = (fn as (...a: unknown[]) => unknown)(...args);
        try { returned.push(JSON.stringify(r) ?? ''); } catch { /* not JSON */ }
        return r;
      } catch (err) {
        returned.push(String(err));
        throw err;
      }
    }])) as unknown as HostCallbacks;
    w.isolate.callbacks = () => recording;
    const res = await w.fetch('http://w/');
    expect(res.status).toBe(200);
    expect(res.text.length).toBeGreaterThan(10_000);
    expect(returned.length).toBeGreaterThan(5);
    for (const s of [res.text, ...returned]) {
      expect(s).not.toContain(UID);
      expect(s).not.toContain(OTHER_UID);
      expect(s).not.toContain('5ecre7');
    }
  });
});

describe('state.storage', () => {
  it('get / put / delete with single keys, arrays and entries objects; reads see the request\'s own writes', async () => {
    const a = await actor([
      `await storage.put('a', 1);
       const first = await storage.get('a');
       await storage.put({ b: 'two', c: { three: [3] }, 'é': null });
       const many = await storage.get(['c', 'zz', 'a', 'b']);
       return { first, missing: (await storage.get('nope')) === undefined, many: [...many], isMap: many instanceof Map,
         del: await storage.delete('a'), delAgain: await storage.delete('a'), count: await storage.delete(['b', 'c', 'x']),
         after: [...(await storage.get(['a', 'b', 'c', 'é']))], putResult: (await storage.put('k', 1)) ?? 'undefined',
         promise: storage.get('k') instanceof Promise };`,
    ]);
    expect(await step(a, 0)).toEqual({
      first: 1, missing: true, many: [['a', 1], ['b', 'two'], ['c', { three: [3] }]], isMap: true,
      del: true, delAgain: false, count: 2, after: [['é', null]], putResult: 'undefined', promise: true,
    });
    expect(a.storage.takePending().map((o) => `${o.op}:${'key' in o ? o.key : ''}`)).toEqual([
      'put:a', 'put:b', 'put:c', 'put:é', 'delete:a', 'delete:b', 'delete:c', 'put:k',
    ]);
  });

  it('list() orders keys by UTF-8 bytes (code points), with prefix, start, startAfter, end, limit and reverse', async () => {
    // UTF-16 order would put the emoji (a surrogate pair) before U+E000 and U+FFFD.
    const keys = ['b', 'a', 'ab', 'abc', 'b\u0000', 'é', '\uE000', '\uFFFD', '😀', '😀x', 'Z', ''];
    const a = await actor([
      `for (const k of ${JSON.stringify(keys)}) await storage.put(k, k.length);
       const L = async (o) => [...(await storage.list(o)).keys()];
       return {
         all: await L(), values: [...(await storage.list({ prefix: 'ab' })).values()],
         prefix: await L({ prefix: 'a' }), prefixEmoji: await L({ prefix: '😀' }),
         start: await L({ start: 'b' }), startAfter: await L({ startAfter: 'b' }), end: await L({ end: 'ab' }),
         range: await L({ start: 'a', end: 'b\\u0000' }), limit: await L({ limit: 3 }), reverse: await L({ reverse: true, limit: 3 }),
         reverseRange: await L({ start: 'a', end: 'é', reverse: true }), prefixLimitReverse: await L({ prefix: 'a', limit: 2, reverse: true }),
         empty: await L({ start: 'z', end: 'a' }), isMap: (await storage.list()) instanceof Map,
       };`,
      `const errors = [];
       for (const o of [{ start: 'a', startAfter: 'b' }, { limit: 0 }, { limit: 1.5 }, 'x']) {
         try { await storage.list(o); errors.push('ok'); } catch (e) { errors.push(e.constructor.name + ': ' + e.message); }
       }
       return errors;`,
    ]);
    const byCodePoint = [...keys].sort(compareKeys);
    expect(byCodePoint).toEqual(['', 'Z', 'a', 'ab', 'abc', 'b', 'b\u0000', 'é', '\uE000', '\uFFFD', '😀', '😀x']);
    const out = await step<Record<string, unknown>>(a, 0);
    expect(out).toEqual({
      all: byCodePoint, values: [2, 3],
      prefix: ['a', 'ab', 'abc'], prefixEmoji: ['😀', '😀x'],
      start: ['b', 'b\u0000', 'é', '\uE000', '\uFFFD', '😀', '😀x'], startAfter: ['b\u0000', 'é', '\uE000', '\uFFFD', '😀', '😀x'],
      end: ['', 'Z', 'a'], range: ['a', 'ab', 'abc', 'b'], limit: ['', 'Z', 'a'], reverse: ['😀x', '😀', '\uFFFD'],
      reverseRange: ['b\u0000', 'b', 'abc', 'ab', 'a'], prefixLimitReverse: ['abc', 'ab'], empty: [], isMap: true,
    });
    const errors = await step<string[]>(a, 1);
    expect(errors[0]).toBe('TypeError: storage.list: start and startAfter cannot both be given');
    expect(errors[1]).toMatch(/^RangeError: storage\.list: limit must be a positive integer/);
    expect(errors[2]).toMatch(/^RangeError: storage\.list: limit must be a positive integer/);
    expect(errors[3]).toBe('TypeError: storage.list(): options must be an object');
  });

  it('deleteAll() removes every key, not the alarm; bytes count key UTF-8 bytes plus serialized value bytes', async () => {
    const a = await actor([
      `await storage.put({ x: 1, y: 'two' }); await storage.setAlarm(Date.now() + 60_000);`,
      `await storage.deleteAll(); return { keys: [...(await storage.list()).keys()], alarm: typeof (await storage.getAlarm()) };`,
    ], { members: 'alarm() {}' });
    await step(a, 0);
    // "x" + serialize(1) (ff 0f 49 02: 4 bytes) + "y" + serialize('two') (ff 0f 22 03 't' 'w' 'o': 7 bytes)
    expect(a.storage.bytes).toBe(1 + 4 + 1 + 7);
    expect(await step(a, 1)).toEqual({ keys: [], alarm: 'number' });
    expect(a.storage.bytes).toBe(0);
    expect(a.storage.takePending().map((o) => o.op)).toEqual(['put', 'put', 'alarm', 'deleteAll']);
  });

  it('values are structured clones: every cloneable type round-trips through takePending() into a new ActorStorage and a new isolate', async () => {
    const writer = await actor([
      `const shared = { s: 1 };
       const cyclic = { name: 'loop' }; cyclic.self = cyclic;
       await storage.put({
         map: new Map([[1, { a: 2 }], ['k', new Set([1, 'x'])]]), set: new Set([1, 'two', 3n]), date: new Date(1700000000000),
         regexp: /ab+c/gi, u8: new Uint8Array([1, 2, 3]), f64: new Float64Array([1.5, -0]), i16: new Int16Array([-2, 300]),
         view: new DataView(new Uint8Array([9, 8, 7]).buffer), ab: new Uint8Array([4, 5]).buffer, big: 12345678901234567890n,
         nested: { a: [1, { b: [shared, shared] }], u: undefined, n: null, nan: NaN, negz: -0, inf: -Infinity },
         cyclic, err: new RangeError('bad range'), boxed: new String('boxed'), sparse: [1, , 3], str: 'ü😀',
         instance: new (class Point { constructor() { this.x = 1; } })(), undef: undefined,
       });`,
    ]);
    await step(writer, 0);
    const ops = writer.storage.takePending();
    expect(ops).toHaveLength(18);
    // What a fresh activation starts from: the committed bytes, nothing else.
    const state = applyOps(emptyState(), ops);
    for (const v of state.values.values()) expect(v).toBeInstanceOf(Uint8Array);
    const reader = await actor([
      `const g = async (k) => storage.get(k);
       const map = await g('map'), set = await g('set'), u8 = await g('u8'), view = await g('view'), nested = await g('nested'), cyclic = await g('cyclic'), err = await g('err');
       const f64 = await g('f64');
       return {
         map: map instanceof Map && map.get(1).a === 2 && map.get('k') instanceof Set && map.get('k').has('x'),
         set: set instanceof Set && [...set].join() === '1,two,3' && typeof [...set][2] === 'bigint',
         date: (await g('date')) instanceof Date && (await g('date')).getTime() === 1700000000000,
         regexp: String(await g('regexp')), u8: u8 instanceof Uint8Array && [...u8].join() === '1,2,3' && u8.byteOffset === 0 && u8.buffer.byteLength === 3,
         f64: f64 instanceof Float64Array && f64[0] === 1.5 && Object.is(f64[1], -0), i16: [...(await g('i16'))].join(),
         view: view instanceof DataView && view.getUint8(0) === 9 && view.byteLength === 3,
         ab: (await g('ab')) instanceof ArrayBuffer && [...new Uint8Array(await g('ab'))].join() === '4,5',
         big: typeof (await g('big')) === 'bigint' && (await g('big')) === 12345678901234567890n,
         nested: 'u' in nested && nested.u === undefined && nested.n === null && Number.isNaN(nested.nan) && Object.is(nested.negz, -0) && nested.inf === -Infinity
           && nested.a[1].b[0] === nested.a[1].b[1],
         cyclic: cyclic.self === cyclic && cyclic.name === 'loop',
         err: err instanceof RangeError && err.message === 'bad range',
         boxed: typeof (await g('boxed')) === 'object' && String(await g('boxed')) === 'boxed',
         sparse: (await g('sparse')).length === 3 && !(1 in (await g('sparse'))), str: await g('str'),
         instance: JSON.stringify(await g('instance')), undef: (await storage.get(['undef'])).has('undef'),
       };`,
    ], { state });
    expect(await step(reader, 0)).toEqual({
      map: true, set: true, date: true, regexp: '/ab+c/gi', u8: true, f64: true, i16: '-2,300', view: true, ab: true, big: true,
      nested: true, cyclic: true, err: true, boxed: true, sparse: true, str: 'ü😀', instance: '{"x":1}', undef: true,
    });
    // And host side, the same bytes decode to the same values.
    const date = decodeValue(state.values.get('date')!);
    expect(date).toBeInstanceOf(Date);
  });

  it('what structured clone refuses fails with a DataCloneError naming the key, and nothing is written', async () => {
    const a = await actor([
      `const out = [];
       for (const v of [() => 1, Symbol('s'), { nested: { f() {} } }, [1, new Request('http://x/')], new Headers(), Promise.resolve(1), new WeakMap(), new Map([[1, function named() {}]])]) {
         try { await storage.put('k', v); out.push('stored'); } catch (e) { out.push(e.name + ': ' + e.message); }
       }
       try { await storage.put({ ok: 1, bad: Symbol('x') }); out.push('stored'); } catch (e) { out.push(e.name + ': ' + e.message); }
       out.push(String(await storage.get('ok')), String(await storage.get('k')));
       return out;`,
    ]);
    const out = await step<string[]>(a, 0);
    expect(out).toEqual([
      'DataCloneError: storage.put(): the value for key "k": a function could not be cloned.',
      'DataCloneError: storage.put(): the value for key "k": a symbol could not be cloned.',
      'DataCloneError: storage.put(): the value for key "k": function f could not be cloned.',
      'DataCloneError: storage.put(): the value for key "k": #<Request> could not be cloned.',
      'DataCloneError: storage.put(): the value for key "k": #<Headers> could not be cloned.',
      'DataCloneError: storage.put(): the value for key "k": #<Promise> could not be cloned.',
      'DataCloneError: storage.put(): the value for key "k": #<WeakMap> could not be cloned.',
      'DataCloneError: storage.put(): the value for key "k": function named could not be cloned.',
      'DataCloneError: storage.put(): the value for key "bad": a symbol could not be cloned.',
      'undefined', 'undefined',
    ]);
    expect(a.storage.takePending()).toEqual([]);
  });

  it('limits: 2 KiB keys, 128 KiB values, 128 keys per call, valid Unicode keys', async () => {
    const a = await actor([
      `const out = [];
       const t = async (f) => { try { await f(); out.push('ok'); } catch (e) { out.push(e.constructor.name + ': ' + e.message); } };
       await t(() => storage.put('k'.repeat(2048), 1));
       await t(() => storage.put('k'.repeat(2049), 1));
       await t(() => storage.put('é'.repeat(1025), 1));
       await t(() => storage.get('k'.repeat(2049)));
       await t(() => storage.put('v', 'x'.repeat(128 * 1024 - 10)));
       await t(() => storage.put('v', 'x'.repeat(128 * 1024)));
       await t(() => storage.get(Array.from({ length: 129 }, (_, i) => 'k' + i)));
       await t(() => storage.put(Object.fromEntries(Array.from({ length: 129 }, (_, i) => ['k' + i, i]))));
       await t(() => storage.delete(Array.from({ length: 128 }, (_, i) => 'k' + i)));
       await t(() => storage.put('\\ud800', 1));
       return out;`,
    ]);
    const out = await step<string[]>(a, 0);
    expect(out[0]).toBe('ok');
    expect(out[1]).toBe('RangeError: storage: keys cannot be larger than 2048 bytes; a key of 2049 bytes was given');
    expect(out[2]).toBe('RangeError: storage: keys cannot be larger than 2048 bytes; a key of 2050 bytes was given');
    expect(out[3]).toMatch(/^RangeError: storage: keys cannot be larger than 2048 bytes/);
    expect(out[4]).toBe('ok');
    expect(out[5]).toMatch(/^RangeError: storage\.put: values cannot be larger than 131072 bytes serialized; the value for key "v" is 13107\d bytes/);
    expect(out[6]).toBe('RangeError: storage.get: at most 128 keys per call; 129 were given');
    expect(out[7]).toBe('RangeError: storage.put: at most 128 entries per call; 129 were given');
    expect(out[8]).toBe('ok');
    expect(out[9]).toBe('TypeError: storage: a key contains a lone UTF-16 surrogate (keys must be valid Unicode)');
    expect(a.storage.takePending().map((o) => o.op)).toEqual(['put', 'put']);
  });

  it('maxBytesPerActor: a write over it fails naming the limit and the actor, all or nothing; shrinking is always allowed', async () => {
    const a = await actor([
      `const out = [];
       const t = async (f) => { try { await f(); out.push('ok'); } catch (e) { out.push(e.constructor.name + ': ' + e.message); } };
       await t(() => storage.put('big', new Uint8Array(100 * 1024)));
       await t(() => storage.put('big2', new Uint8Array(100 * 1024)));
       await t(() => storage.put({ small: 1, big3: new Uint8Array(100 * 1024) }));
       await t(() => storage.put('big', new Uint8Array(50 * 1024)));
       await t(() => storage.put('big2', new Uint8Array(100 * 1024)));
       out.push(String(await storage.get('small')));
       return out;`,
    ], { maxBytes: 200 * 1024 });
    const out = await step<string[]>(a, 0);
    expect(out[0]).toBe('ok');
    expect(out[1]).toMatch(new RegExp(`^RangeError: storage\\.put: actor default/counters ${ID} would hold 2\\d{5} bytes, over its storage limit of 204800 bytes \\(spec\\.storage\\.maxBytesPerActor of the DurableActor; keys and serialized values count\\)$`));
    expect(out[2]).toMatch(/over its storage limit of 204800 bytes/);
    expect(out[3]).toBe('ok');
    expect(out[4]).toBe('ok');
    // The refused batch wrote nothing, not even its small entry.
    expect(out[5]).toBe('undefined');
    expect(a.storage.bytes).toBeLessThanOrEqual(200 * 1024);
    expect(a.storage.bytes).toBeGreaterThan(150 * 1024);
    // A storage already over a (lowered) limit may still delete.
    const over = new ActorStorage(a.storage.snapshot(), { maxBytes: 1024, actor: 'ns/a 1' });
    expect(() => over.put('more', 1)).toThrow(ActorStorageFullError);
    expect(over.delete('big')).toBe(true);
    over.deleteAll();
    expect(over.bytes).toBe(0);
  });

  it('transaction(): commits the closure\'s writes, rolls back on throw or txn.rollback() leaving no op pending', async () => {
    const a = await actor([
      `await storage.put('base', 0);
       const v = await storage.transaction(async (txn) => { await txn.put('t1', 1); await txn.delete('base'); return (await txn.get('t1')) + 1; });
       let thrownMsg = null;
       try {
         await storage.transaction(async (txn) => { await txn.put('t2', 2); await txn.put('t1', 'changed'); await txn.setAlarm(Date.now() + 5000); throw new Error('abort!'); });
       } catch (e) { thrownMsg = e.message; }
       let afterRollback = null;
       const r = await storage.transaction(async (txn) => {
         await txn.put('t3', 3); await txn.deleteAlarm();
         txn.rollback();
         try { await txn.put('t4', 4); } catch (e) { afterRollback = e.message; }
         return 'rolled back';
       });
       let stale = null, saved;
       await storage.transaction(async (txn) => { saved = txn; });
       try { await saved.get('t1'); } catch (e) { stale = e.message; }
       return { v, thrownMsg, r, afterRollback, stale, keys: [...(await storage.list()).entries()], alarm: await storage.getAlarm() };`,
    ], { members: 'alarm() {}' });
    expect(await step(a, 0)).toEqual({
      v: 2, thrownMsg: 'abort!', r: 'rolled back', afterRollback: 'txn.put(): the transaction was rolled back',
      stale: 'txn.get(): the transaction is already over', keys: [['t1', 1]], alarm: null,
    });
    expect(a.storage.takePending().map((o) => `${o.op}:${'key' in o ? o.key : ''}`)).toEqual(['put:base', 'put:t1', 'delete:base']);
  });

  it('getAlarm / setAlarm(number | Date) / deleteAlarm; setAlarm needs an alarm() handler', async () => {
    const a = await actor([
      `const t = 1_900_000_000_000;
       const first = await storage.getAlarm();
       await storage.setAlarm(t); const one = await storage.getAlarm();
       await storage.setAlarm(new Date(t + 1)); const two = await storage.getAlarm();
       await storage.deleteAlarm(); const three = await storage.getAlarm();
       await storage.setAlarm(t + 2);
       let bad = null; try { await storage.setAlarm('tomorrow'); } catch (e) { bad = e.constructor.name + ': ' + e.message; }
       return { first, one, two, three, bad };`,
    ], { members: 'async alarm() {}' });
    expect(await step(a, 0)).toEqual({
      first: null, one: 1_900_000_000_000, two: 1_900_000_000_001, three: null,
      bad: 'TypeError: storage.setAlarm(): the time must be a Date or a number of milliseconds since the epoch',
    });
    expect(a.storage.alarm).toBe(1_900_000_000_002);
    expect(a.storage.takePending()).toEqual([
      { op: 'alarm', time: 1_900_000_000_000 }, { op: 'alarm', time: 1_900_000_000_001 }, { op: 'alarm', time: null }, { op: 'alarm', time: 1_900_000_000_002 },
    ]);
    const noHandler = await actor([`await storage.setAlarm(Date.now());`]);
    expect(await thrown(noHandler, 0)).toMatchObject({ type: 'TypeError', message: 'storage.setAlarm(): the actor class has no alarm() handler to call' });
  });

  it('discardPending() restores the state at the last take; a state from the log starts where it left off', async () => {
    const storage = new ActorStorage({ values: new Map(), alarm: null }, { maxBytes: 1 << 20, actor: 'ns/a 1' });
    storage.put('a', 1);
    storage.put('b', { x: [1] });
    const committed = storage.takePending();
    storage.put('a', 2);
    storage.delete('b');
    storage.put('c', 3);
    storage.deleteAll();
    storage.put('d', 4);
    storage.setAlarm(5);
    expect([...storage.list().keys()]).toEqual(['d']);
    storage.discardPending();
    expect([...storage.list()]).toEqual([['a', 1], ['b', { x: [1] }]]);
    expect(storage.alarm).toBeNull();
    expect(storage.takePending()).toEqual([]);
    const bytes = storage.bytes;
    const again = new ActorStorage(applyOps(emptyState(), committed), { maxBytes: 1 << 20, actor: 'ns/a 1' });
    expect(again.bytes).toBe(bytes);
    expect(again.getMany(['b', 'a'])).toEqual(new Map<string, unknown>([['a', 1], ['b', { x: [1] }]]));
  });
});

describe('actor classes', () => {
  it('a class that is not exported, or not a class, is a BundleError', async () => {
    const p = await actorPool();
    const src = `export class Real { async fetch() { return new Response('') } } export const notAClass = 1; export const arrow = () => {};`;
    for (const [className, msg] of [
      ['Missing', /the DurableActor class Missing is not exported by the bundle \(it exports Real, arrow, notAClass\)/],
      ['notAClass', /the export notAClass is not a class \(it is number\)/],
      ['arrow', /the export arrow is not a class \(it is function\)/],
    ] as const) {
      const hooks = testHooks();
      const err = await ActorIsolate.activate({ worker: workerDef(src), className, actor: 'ns/x' }, { id: ID, storage: new ActorStorage(emptyState(), { maxBytes: 1 << 20, actor: 'x' }) }, p.take(128), hooks)
        .then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(BundleError);
      expect(String((err as Error).message)).toMatch(msg);
      expect(hooks.disposals).toEqual(['crash']);
    }
  });

  it('the constructor gets state { id, storage, blockConcurrencyWhile, waitUntil } and the worker\'s env; a throwing constructor is a WorkerScriptError', async () => {
    const a = await activate({ ...def(stepsActor([
      `return { id: state.id.toString(), name: state.id.name ?? null, keys: Object.keys(state).sort(), greeting: env.GREETING,
                ns: typeof env.COUNTERS.idFromName, frozen: Object.isFrozen(state) && Object.isFrozen(storage), eq: state.id.equals(env.COUNTERS.idFromName('test')) };`,
    ])), worker: workerDef(stepsActor([
      `return { id: state.id.toString(), name: state.id.name ?? null, keys: Object.keys(state).sort(), greeting: env.GREETING,
                ns: typeof env.COUNTERS.idFromName, frozen: Object.isFrozen(state) && Object.isFrozen(storage), eq: state.id.equals(env.COUNTERS.idFromName('test')) };`,
    ]), { env: { text: { GREETING: 'hi' }, actors: { COUNTERS: TARGET } } }) }, ID, { name: 'test' });
    live.push(a);
    expect(await step(a, 0)).toEqual({
      id: ID, name: 'test', keys: [
        'acceptWebSocket', 'blockConcurrencyWhile', 'getHibernatableWebSocketEventTimeout', 'getTags', 'getWebSocketAutoResponse',
        'getWebSocketAutoResponseTimestamp', 'getWebSockets', 'id', 'setHibernatableWebSocketEventTimeout', 'setWebSocketAutoResponse',
        'storage', 'waitUntil',
      ], greeting: 'hi', ns: 'function', frozen: true, eq: true,
    });
    const err = await activate(def(stepsActor([], { ctor: `throw new Error('no way')` })), ID).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(WorkerScriptError);
    expect((err as Error).message).toMatch(/the constructor of T threw: Error: no way/);
  });
});

describe('blockConcurrencyWhile', () => {
  it('in the constructor: activation resolves (and the first request runs) only after it settles; its writes are pending', async () => {
    const a = await actor([`return { ready: self.ready, stored: await storage.get('init') };`], {
      ctor: `this.ready = false;
             state.blockConcurrencyWhile(async () => {
               await new Promise((r) => setTimeout(r, 50));
               await state.storage.put('init', 'done');
               this.ready = true;
             });`,
    });
    expect(a.storage.takePending()).toMatchObject([{ op: 'put', key: 'init' }]);
    expect(await step(a, 0)).toEqual({ ready: true, stored: 'done' });
  });

  it('during a request: the request is not over (finish) until it settles, so the next request sees its effect', async () => {
    const a = await actor([
      `state.blockConcurrencyWhile(async () => { await new Promise((r) => setTimeout(r, 50)); self.flag = 'set'; await storage.put('late', 1); });
       return self.flag ?? 'unset';`,
      `return self.flag ?? 'unset';`,
    ]);
    expect(await step(a, 0)).toBe('unset');
    expect(a.busy).toBe(false);
    expect(a.storage.takePending()).toMatchObject([{ op: 'put', key: 'late' }]);
    expect(await step(a, 1)).toBe('set');
  });

  it('returns the callback\'s value; a callback that throws resets the actor (ActorResetError, isolate disposed, writes discarded)', async () => {
    const a = await actor([
      `return await state.blockConcurrencyWhile(() => 42);`,
      `await storage.put('doomed', 1);
       state.blockConcurrencyWhile(async () => { throw new Error('broken invariant'); }).catch(() => {});
       return 'answered';`,
    ]);
    expect(await step(a, 0)).toBe(42);
    const err = await step(a, 1).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(ActorResetError);
    expect((err as ActorResetError).reason).toMatch(/^state\.blockConcurrencyWhile\(\) callback threw: Error: broken invariant/);
    expect((err as Error).message).toMatch(new RegExp(`^actor default/counters ${ID} was reset: `));
    expect(a.dead).toBe(true);
    expect(a.storage.dirty).toBe(true);
    a.storage.discardPending();
    expect(a.storage.get('doomed')).toBeUndefined();
  });

  it('in the constructor: a throwing callback fails the activation with ActorResetError', async () => {
    const hooks = testHooks();
    const err = await activate(def(stepsActor([], { ctor: `state.blockConcurrencyWhile(() => { throw new TypeError('nope'); });` })), ID, { hooks })
      .then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(ActorResetError);
    expect((err as ActorResetError).reason).toMatch(/callback threw: TypeError: nope/);
    expect(hooks.disposals).toEqual(['reset']);
  });

  it('runs under the event\'s CPU budget: a spinning callback in the constructor fails the activation with the limit', async () => {
    const hooks = testHooks();
    const source = stepsActor([], { ctor: `state.blockConcurrencyWhile(async () => { for (;;) {} });` });
    const err = await activate({ ...def(source), worker: workerDef(source, { limits: { cpuMsPerRequest: 100 } }) }, ID, { hooks })
      .then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(WorkerLimitError);
    expect((err as Error).message).toMatch(/exceeded its CPU limit \(100 ms per request\)/);
    expect(hooks.disposals).toEqual(['cpu']);
  });

  it('a callback that does not settle in time resets the actor', async () => {
    const a = await activate(def(stepsActor([
      `state.blockConcurrencyWhile(() => new Promise(() => {})); return 'answered';`,
    ]), { blockConcurrencyTimeoutMs: 100 }), ID);
    live.push(a);
    const err = await step(a, 0).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(ActorResetError);
    expect((err as ActorResetError).reason).toBe('state.blockConcurrencyWhile(): the callback did not settle within 0.1 s');
    expect(a.dead).toBe(true);
  });
});

describe('alarms', () => {
  it('alarm() runs with { retryCount, isRetry }; the alarm is cleared first; a throw leaves it set for a retry', async () => {
    const a = await actor([
      `await storage.setAlarm(1_800_000_000_000); return await storage.getAlarm();`,
      `return { runs: await storage.get('runs'), alarm: await storage.getAlarm() };`,
    ], {
      members: `async alarm(info) {
        const runs = (await this.state.storage.get('runs')) ?? [];
        runs.push({ ...info, frozen: Object.isFrozen(info), during: await this.state.storage.getAlarm() });
        await this.state.storage.put('runs', runs);
        if (info.retryCount === 0) throw new Error('first try fails');
        await this.state.storage.setAlarm(1_800_000_060_000);
      }`,
    });
    expect(await step(a, 0)).toBe(1_800_000_000_000);
    a.storage.takePending();
    const err = await a.alarm({ retryCount: 0 }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(WorkerScriptError);
    expect((err as Error).message).toMatch(/alarm\(\) threw: Error: first try fails/);
    expect(a.dead).toBe(false);
    a.storage.discardPending(); // the host drops a failed alarm's writes: the alarm stays set
    expect(a.storage.alarm).toBe(1_800_000_000_000);
    await a.alarm({ retryCount: 1, isRetry: true });
    expect(a.storage.takePending().map((o) => o.op)).toEqual(['alarm', 'put', 'alarm']);
    expect(await step(a, 1)).toEqual({
      runs: [{ retryCount: 1, isRetry: true, frozen: true, during: null }],
      alarm: 1_800_000_060_000,
    });
    await a.alarm(2);
    expect(a.storage.alarm).toBe(1_800_000_060_000);
    expect((a.storage.get('runs') as unknown[]).at(-1)).toEqual({ retryCount: 2, isRetry: true, frozen: true, during: null });
  });

  it('an alarm for a class without alarm() is a WorkerScriptError', async () => {
    const a = await actor([]);
    await expect(a.alarm({ retryCount: 0 })).rejects.toThrow(/has no alarm\(\) handler/);
  });
});

describe('stub.fetch() through the actor router', () => {
  const COUNTER = `
    export class T {
      constructor(state, env) { this.state = state; this.hits = 0; }
      async fetch(request) {
        this.hits += 1;
        const count = ((await this.state.storage.get('count')) ?? 0) + 1;
        await this.state.storage.put('count', count);
        return Response.json({ id: this.state.id.toString(), name: this.state.id.name ?? null, count, hits: this.hits,
          method: request.method, url: request.url, body: await request.text(), header: request.headers.get('x-test') });
      }
    }
    export default { fetch() { return new Response('caller') } };`;
  const CALLER = `export default { async fetch(request, env) {
    const u = new URL(request.url);
    const ns = env.COUNTERS;
    const id = u.searchParams.has('id') ? ns.idFromString(u.searchParams.get('id')) : ns.idFromName(u.searchParams.get('name'));
    const res = await ns.get(id).fetch('http://actor/inc?x=1', { method: 'POST', body: 'payload', headers: { 'x-test': 'yes' } });
    return new Response(await res.text(), { status: res.status, headers: { 'x-actor-status': String(res.status) } });
  } }`;

  it('reaches the instance of the id, which keeps its own state; state.id.name travels with named ids', async () => {
    const host = new FakeActorHost();
    host.serve(TARGET, def(COUNTER));
    const w = await BoundWorker.load(CALLER, { COUNTERS: TARGET }, host);
    live.push(w);
    try {
      const get = async (q: string) => JSON.parse((await w.fetch(`http://w/?${q}`)).text) as Record<string, unknown>;
      const a1 = await get('name=alice');
      const b1 = await get('name=bob');
      const a2 = await get('name=alice');
      const ids = new ActorIds(UID);
      expect(a1).toEqual({ id: ids.idFromName('alice').hex, name: 'alice', count: 1, hits: 1, method: 'POST', url: 'http://actor/inc?x=1', body: 'payload', header: 'yes' });
      expect(b1).toMatchObject({ id: ids.idFromName('bob').hex, name: 'bob', count: 1, hits: 1 });
      expect(a2).toMatchObject({ id: ids.idFromName('alice').hex, count: 2, hits: 2 });
      // A unique id, reached by its string form (no name).
      const unique = ids.newUniqueId().hex;
      expect(await get(`id=${unique}`)).toMatchObject({ id: unique, name: null, count: 1 });
      expect(host.calls.map((c) => c.target)).toEqual(Array(4).fill(TARGET));
      expect(host.calls[0]!.opts).toEqual({ name: 'alice' });
      // Evicted and reactivated from its committed state: storage continues, memory starts over.
      host.evict(UID, ids.idFromName('alice').hex);
      expect(await get('name=alice')).toMatchObject({ count: 3, hits: 1 });
      expect(host.activations.filter((x) => x === ids.idFromName('alice').hex)).toHaveLength(2);
    } finally {
      host.close();
    }
  });

  it('counts against the request\'s subrequest budget, like fetch', async () => {
    const host = new FakeActorHost();
    host.serve(TARGET, def(COUNTER));
    const w = await BoundWorker.load(`export default { async fetch(request, env) {
      const out = [];
      for (let i = 0; i < 3; i++) {
        try { const r = await env.COUNTERS.get(env.COUNTERS.idFromName('n')).fetch('http://actor/'); out.push((await r.json()).count); }
        catch (e) { out.push(e.message); }
      }
      return Response.json(out);
    } }`, { COUNTERS: TARGET }, host, { subrequests: 2 });
    live.push(w);
    try {
      expect(JSON.parse((await w.fetch('http://w/')).text)).toEqual([1, 2, 'env.COUNTERS.get(id).fetch(): worker caller exceeded its subrequest limit (2 per request)']);
      expect(host.calls).toHaveLength(2);
    } finally {
      host.close();
    }
  });

  it('an actor that throws rejects the caller\'s stub.fetch(); without a router stubs fail with a clear message', async () => {
    const host = new FakeActorHost();
    host.serve(TARGET, def(`export class T { async fetch() { throw new Error('actor exploded'); } }`));
    const w = await BoundWorker.load(`export default { async fetch(request, env) {
      try { await env.COUNTERS.get(env.COUNTERS.newUniqueId()).fetch('http://actor/'); return new Response('resolved'); }
      catch (e) { return new Response(e.constructor.name + ': ' + e.message); }
    } }`, { COUNTERS: TARGET }, host);
    live.push(w);
    try {
      expect((await w.fetch('http://w/')).text).toMatch(/^Error: env\.COUNTERS\.get\(id\)\.fetch\(\): .*actor exploded/);
    } finally {
      host.close();
    }
    const lonely = await BoundWorker.load(`export default { async fetch(request, env) {
      try { await env.COUNTERS.get(env.COUNTERS.idFromName('x')).fetch('http://actor/'); return new Response('resolved'); }
      catch (e) { return new Response(e.constructor.name + ': ' + e.message); }
    } }`, { COUNTERS: TARGET }, undefined);
    live.push(lonely);
    expect((await lonely.fetch('http://w/')).text).toBe('Error: env.COUNTERS.get(id).fetch(): actors are not available on this agent');
  });
});
