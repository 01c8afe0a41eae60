import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ActorIds } from '../../node-agent/bindings/actor-id.js';
import { startRpcRig, TARGET, type RpcRig } from './rpc-harness.js';

// JS RPC on Durable Object stubs (`await stub.method(...args)`), in real isolates behind the
// agent's ActorHost (input and output gates). The worker is written against the
// cloudflare:workers module as Cloudflare's docs write it. Each route of the caller runs one
// scenario and answers JSON.

const SOURCE = `
import { DurableObject, RpcTarget } from 'cloudflare:workers';

class Counter extends RpcTarget {
  constructor(start) { super(); this.n = start; }
  increment(by = 1) { this.n += by; return this.n; }
  get value() { return this.n; }
}

export class Obj extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.counter = new Counter(100);
  }
  async sayHello(name) { return \`Hello, \${name}!\`; }
  async echo(v) { return v; }
  getCounter() { return this.counter; }
  makeAdder(base) { return (x) => base + x; }
  async fail(kind) {
    if (kind === 'type') throw new TypeError('bad type');
    if (kind === 'range') throw new RangeError('out of range');
    class Custom extends Error { constructor(m) { super(m); this.name = 'Custom'; } }
    throw new Custom('custom thing');
  }
  async failAfterWrite(v) { await this.ctx.storage.put('w', v); throw new Error('after write'); }
  async slowIncrement() {
    const before = (await this.ctx.storage.get('c')) ?? 0;
    await new Promise((r) => setTimeout(r, 20));
    await this.ctx.storage.put('c', before + 1);
    return before + 1;
  }
  async write(k, v) { await this.ctx.storage.put(k, v); return 'ok'; }
  async read(k) { return (await this.ctx.storage.get(k)) ?? null; }
  _private() { return 'underscore methods are callable, as on Workers'; }
  envKeys() { return Object.keys(this.env); }
  async mapWith(items, fn) { const out = []; for (const i of items) out.push(await fn(i)); this.saved = fn; return out; }
  async visit(target) { return (await target.describe('visited')) + ' / ' + (await target.label); }
  async callThrower(fn) { try { await fn(); return 'no error'; } catch (e) { return e.name + ': ' + e.message + ' remote=' + (e.remote === true); } }
  async useSaved() { return this.saved(1); }
  manyTargets(n) { return Array.from({ length: n }, (_, i) => new Counter(i)); }
  spin() { for (;;) {} }
  protoCheck(v) { return { own: Object.keys(v), polluted: ({}).polluted === undefined ? 'no' : 'yes', inner: v.__proto__ && v.__proto__.polluted }; }
  async fetch(request) { return new Response('fetch still works: ' + new URL(request.url).pathname); }
}

const show = (e) => ({ name: e.name, message: e.message, isTypeError: e instanceof TypeError, remote: e.remote === true });

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const stub = env.OBJ.getByName(url.searchParams.get('o') ?? 'one');
    const out = {};
    switch (url.pathname) {
      case '/hello': return Response.json(await stub.sayHello('world'));
      case '/pipe1': return Response.json(await stub.getCounter().increment(1));
      case '/pipe-tree': {
        const p = stub.getCounter();
        const [inc, value, counter, missing] = await Promise.allSettled([p.increment(2), p.value, p, p.nope()]);
        return Response.json({ inc: inc.value, value: value.value, isStub: typeof counter.value.increment, missing: show(missing.reason), after: await counter.value.value });
      }
      case '/stray': stub.noSuchMethod(); stub.fail('type'); return new Response('sent, not awaited');
      case '/clone': {
        const cyc = { a: 1 }; cyc.self = cyc;
        const v = await stub.echo({
          s: 'x', n: 1.5, nan: NaN, negz: -0, inf: -Infinity, big: 12345678901234567890n, u: undefined, nul: null,
          d: new Date(5), re: /a+b/gi, map: new Map([[1, 'one']]), set: new Set(['s']), bytes: new Uint8Array([1, 2, 255]),
          buf: new Uint16Array([65535]).buffer, err: new RangeError('r'), arr: [1, [2, 3]], cyc,
        });
        return Response.json({
          s: v.s, n: v.n, nan: Number.isNaN(v.nan), negz: Object.is(v.negz, -0), inf: v.inf === -Infinity, big: v.big === 12345678901234567890n,
          u: 'u' in v && v.u === undefined, nul: v.nul, d: v.d instanceof Date && v.d.getTime(), re: v.re instanceof RegExp && v.re.flags + v.re.source,
          map: v.map instanceof Map && v.map.get(1), set: v.set instanceof Set && v.set.has('s'), bytes: v.bytes instanceof Uint8Array && [...v.bytes],
          buf: v.buf instanceof ArrayBuffer && new Uint16Array(v.buf)[0], err: v.err instanceof RangeError && v.err.message, arr: v.arr,
          cyc: v.cyc.self === v.cyc,
        });
      }
      case '/pipeline': {
        out.piped = await stub.getCounter().increment(5);
        out.prop = await stub.getCounter().value;
        const c = await stub.getCounter();
        out.again = await c.increment();
        out.getter = await c.value;
        const d = await stub.getCounter();
        out.disposedLater = await d.increment();
        d[Symbol.dispose]();
        try { await d.increment(); } catch (e) { out.afterDisposeTarget = show(e); }
        const add = await stub.makeAdder(10);
        out.fn = await add(5);
        add[Symbol.dispose]();
        try { await add(1); } catch (e) { out.afterDispose = show(e); }
        return Response.json(out);
      }
      case '/errors': {
        for (const k of ['type', 'range', 'custom']) { try { await stub.fail(k); } catch (e) { out[k] = show(e); } }
        try { await stub.noSuchMethod(1); } catch (e) { out.missing = show(e); }
        try { await stub.constructor(); } catch (e) { out.ctor = show(e); }
        try { await stub.alarm(); } catch (e) { out.alarm = show(e); }
        out.underscore = await stub._private();
        try { await stub.echo(Symbol('s')); } catch (e) { out.symArg = show(e); }
        class Mine { constructor() { this.x = 1; } }
        try { await stub.echo(new Mine()); } catch (e) { out.classArg = show(e); }
        try { await stub.failAfterWrite('kept'); } catch (e) { out.afterWrite = show(e); }
        out.kept = await stub.read('w');
        return Response.json(out);
      }
      case '/concurrent': {
        const rs = await Promise.all([stub.slowIncrement(), stub.slowIncrement(), stub.slowIncrement()]);
        return Response.json({ results: rs.sort(), final: await stub.read('c') });
      }
      case '/callbacks': {
        class Visitor extends RpcTarget {
          constructor() { super(); this.seen = []; }
          describe(what) { this.seen.push(what); return 'described ' + what; }
          get label() { return 'visitor-label'; }
        }
        const v = new Visitor();
        out.mapped = await stub.mapWith([1, 2, 3], (x) => x * 10);
        out.visited = await stub.visit(v);
        out.seen = v.seen;
        out.thrown = await stub.callThrower(() => { throw new TypeError('from the caller'); });
        try { await stub.useSaved(); } catch (e) { out.afterCall = show(e); }
        return Response.json(out);
      }
      case '/hostile': {
        try { await stub.echo('x'.repeat(33 * 1024 * 1024)); } catch (e) { out.huge = show(e); }
        let deep = []; for (let i = 0; i < 200000; i++) deep = [deep];
        try { await stub.echo(deep); } catch (e) { out.deep = { name: e.name, remote: e.remote === true }; }
        // The callee keeps at most 1024 lent-out objects: the oldest are released.
        const many = await stub.manyTargets(1100);
        try { await many[0].increment(); } catch (e) { out.released = show(e); }
        out.newest = await many[1099].increment();
        try { await stub.spin(); } catch (e) { out.spin = { name: e.name, limit: /CPU limit/.test(e.message) }; }
        out.after = await stub.sayHello('again');
        out.proto = await stub.protoCheck(JSON.parse('{"__proto__": {"polluted": 1}, "a": 1}'));
        return Response.json(out);
      }
      case '/write': return Response.json(await stub.write('k', url.searchParams.get('v')));
      case '/fetch': return new Response(await (await stub.fetch('http://x/path')).text());
      case '/env': return Response.json(await stub.envKeys());
      default: return new Response('no route', { status: 404 });
    }
  },
};
`;

describe('JS RPC on Durable Object stubs', () => {
  let rig: RpcRig;
  beforeAll(async () => { rig = await startRpcRig(SOURCE, 'Obj'); });
  afterAll(async () => { await rig?.close(); });

  const json = async (path: string): Promise<unknown> => {
    const r = await rig.call(path);
    expect(r.status, r.text).toBe(200);
    return JSON.parse(r.text);
  };

  it('calls a method of a class extending DurableObject (Cloudflare docs example)', async () => {
    expect(await json('/hello')).toBe('Hello, world!');
  });

  it('pipelines in one round trip: calls on an un-awaited result ride in the same message', async () => {
    await json('/hello?o=rt');
    const before = rig.actorCalls();
    const n = await json('/pipe1?o=rt') as number;
    expect(rig.actorCalls() - before).toBe(1);
    const tree = await json('/pipe-tree?o=rt') as Record<string, unknown>;
    // getCounter(), .increment(2), .value and .nope() in one request; then one call on the stub itself.
    expect(rig.actorCalls() - before).toBe(3);
    expect(tree).toEqual({
      inc: n + 2, value: n + 2, isStub: 'function', after: n + 2,
      missing: { name: 'TypeError', message: 'The RPC receiver does not implement the method "nope".', isTypeError: true, remote: true },
    });
  });

  it('lets a call nobody awaits fail without failing the requests after it', async () => {
    expect((await rig.call('/stray?o=stray')).text).toBe('sent, not awaited');
    for (let i = 0; i < 3; i++) expect(await json('/hello?o=stray')).toBe('Hello, world!');
  });

  it('structured-clones arguments and results both ways', async () => {
    expect(await json('/clone')).toEqual({
      s: 'x', n: 1.5, nan: true, negz: true, inf: true, big: true, u: true, nul: null, d: 5, re: 'gia+b',
      map: 'one', set: true, bytes: [1, 2, 255], buf: 65535, err: 'r', arr: [1, [2, 3]], cyc: true,
    });
  });

  it('pipelines through un-awaited results, passes RpcTargets and functions back by reference, disposes them', async () => {
    expect(await json('/pipeline?o=pipe')).toEqual({
      piped: 105, prop: 105, again: 106, getter: 106, disposedLater: 107, fn: 15,
      afterDisposeTarget: { name: 'Error', message: 'RPC stub used after being disposed.', isTypeError: false, remote: false },
      afterDispose: { name: 'Error', message: 'RPC stub used after being disposed.', isTypeError: false, remote: false },
    });
  });

  it('lends functions and RpcTargets passed as arguments for the duration of the call', async () => {
    expect(await json('/callbacks?o=cb')).toEqual({
      mapped: [10, 20, 30],
      visited: 'described visited / visitor-label',
      seen: ['visited'],
      thrown: 'TypeError: from the caller remote=true',
      afterCall: { name: 'Error', message: 'RPC stub used after the call it was passed to ended (or its caller is on another agent, where calling back is not supported)', isTypeError: false, remote: true },
    });
  });

  it('rethrows the callee\'s errors with name and message; missing methods and uncloneable arguments fail as on Workers', async () => {
    const out = await json('/errors?o=err') as Record<string, unknown>;
    expect(out.type).toEqual({ name: 'TypeError', message: 'bad type', isTypeError: true, remote: true });
    expect(out.range).toEqual({ name: 'RangeError', message: 'out of range', isTypeError: false, remote: true });
    expect(out.custom).toMatchObject({ name: 'Error', message: 'custom thing', remote: true });
    expect(out.missing).toEqual({ name: 'TypeError', message: 'The RPC receiver does not implement the method "noSuchMethod".', isTypeError: true, remote: true });
    expect(out.ctor).toMatchObject({ name: 'TypeError', message: 'The RPC receiver does not implement the method "constructor".' });
    expect(out.alarm).toMatchObject({ name: 'TypeError', message: 'The RPC receiver does not implement the method "alarm".' });
    expect(out.underscore).toBe('underscore methods are callable, as on Workers');
    expect(out.symArg).toMatchObject({ name: 'DataCloneError', remote: false });
    expect(out.classArg).toEqual({ name: 'DataCloneError', message: 'Could not serialize object of type "Mine". This type does not support serialization.', isTypeError: false, remote: false });
    expect(out.afterWrite).toMatchObject({ name: 'Error', message: 'after write' });
    expect(out.kept).toBe('kept');
  });

  it('refuses hostile calls with errors the caller catches, and keeps serving', async () => {
    const out = await json('/hostile?o=hostile') as Record<string, unknown>;
    expect(out.huge).toMatchObject({ name: 'RangeError', message: expect.stringMatching(/^Serialized RPC arguments or return values are limited to 32MiB, but the size of this value was: \d+ bytes\.$/), remote: false });
    expect(out.deep).toEqual({ name: 'RangeError', remote: false });
    expect(out.released).toMatchObject({ name: 'Error', message: expect.stringMatching(/after the object it refers to was released/) });
    expect(out.newest).toBe(1100);
    expect(out.spin).toEqual({ name: 'Error', limit: true });
    expect(out.after).toBe('Hello, again!');
    // A "__proto__" key stays an own property on the other side: nothing is polluted.
    expect(out.proto).toEqual({ own: ['__proto__', 'a'], polluted: 'no', inner: 1 });
  });

  it('runs concurrent calls on one actor one at a time (input gate)', async () => {
    expect(await json('/concurrent?o=gate')).toEqual({ results: [1, 2, 3], final: 3 });
  });

  it('commits a call\'s writes before its result returns (output gate)', async () => {
    // Hold the actor's commit: the call's answer must wait for it.
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    let commitSeen!: () => void;
    const seen = new Promise<void>((r) => { commitSeen = r; });
    rig.log.hook = (write) => {
      if (write !== 'commit') return undefined;
      commitSeen();
      return held;
    };
    let answered = false;
    const call = rig.call('/write?o=durable&v=hello').then((r) => { answered = true; return r; });
    await seen;
    await new Promise((r) => setTimeout(r, 50));
    expect(answered).toBe(false);
    rig.log.hook = undefined;
    release();
    expect(JSON.parse((await call).text)).toBe('ok');
    const id = new ActorIds(TARGET.uid).idFromName('durable').hex;
    const loaded = await rig.log.load({ namespace: TARGET.namespace, actor: TARGET.actor, id });
    expect(loaded.state.values.has('k')).toBe(true);
  });

  it('leaves stub.fetch() and env as they were', async () => {
    expect((await rig.call('/fetch')).text).toBe('fetch still works: /path');
    expect(await json('/env')).toEqual(['GREETING', 'OBJ']);
  });
});
