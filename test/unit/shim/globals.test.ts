import { createHash, createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { evaluate, evaluateError, runWorker, TestWorker } from './run-worker.js';

describe('TextEncoder and TextDecoder', () => {
  it('encodes UTF-8, replacing lone surrogates', async () => {
    expect(await evaluate(`
      const e = new TextEncoder();
      return { enc: e.encoding, ascii: [...e.encode('hi')], multi: [...e.encode('é€😀')], lone: [...e.encode('a\\uD800b\\uDC00')], empty: e.encode().length };
    `)).toEqual({
      enc: 'utf-8', ascii: [104, 105], multi: [0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80],
      lone: [0x61, 0xef, 0xbf, 0xbd, 0x62, 0xef, 0xbf, 0xbd], empty: 0,
    });
  });

  it('encodeInto stops before a character that does not fit', async () => {
    expect(await evaluate(`
      const buf = new Uint8Array(5);
      const r = new TextEncoder().encodeInto('a€😀', buf);
      return [r.read, r.written, [...buf]];
    `)).toEqual([2, 4, [0x61, 0xe2, 0x82, 0xac, 0]]);
  });

  it('decodes with replacement, BOM handling, fatal mode and streaming', async () => {
    expect(await evaluate(`
      const d = new TextDecoder();
      const bytes = (...b) => new Uint8Array(b);
      const s = new TextDecoder();
      const streamed = s.decode(bytes(0xf0, 0x9f), { stream: true }) + s.decode(bytes(0x98, 0x80, 0xe2), { stream: true }) + s.decode(bytes(0x82, 0xac));
      let fatal;
      try { new TextDecoder('utf-8', { fatal: true }).decode(bytes(0x61, 0xff)); } catch (e) { fatal = e.constructor.name; }
      return {
        plain: d.decode(bytes(0x68, 0xc3, 0xa9)),
        bom: d.decode(bytes(0xef, 0xbb, 0xbf, 0x61)),
        keepBom: new TextDecoder('utf8', { ignoreBOM: true }).decode(bytes(0xef, 0xbb, 0xbf, 0x61)).length,
        invalid: d.decode(bytes(0x61, 0xff, 0xc3, 0x62, 0xed, 0xa0, 0x80, 0xf0, 0x9f, 0x98)),
        streamed, fatal, view: d.decode(new DataView(bytes(0, 0x6f, 0x6b, 0).buffer, 1, 2)),
        surrogate: d.decode(new TextEncoder().encode('😀')).codePointAt(0),
      };
    `)).toEqual({
      plain: 'hé', bom: 'a', keepBom: 2, invalid: 'a\uFFFD\uFFFDb\uFFFD\uFFFD\uFFFD\uFFFD', streamed: '😀€', fatal: 'TypeError', view: 'ok', surrogate: 0x1f600,
    });
    expect(await evaluateError(`new TextDecoder('latin1')`)).toMatchObject({ type: 'RangeError' });
  });

  it('TextEncoderStream and TextDecoderStream', async () => {
    expect(await evaluate(`
      const text = new Response(new Response('héllo 😀').body.pipeThrough(new TextDecoderStream()).pipeThrough(new TextEncoderStream()));
      return await text.text();
    `)).toBe('héllo 😀');
  });
});

describe('atob and btoa', () => {
  it('round-trips binary strings', async () => {
    expect(await evaluate(`return [btoa(''), btoa('f'), btoa('fo'), btoa('foo'), btoa('\\xff\\xfe'), atob('Zm9v'), atob(' Zm 9v\\nYg== '), atob('Zm8'), atob('//4=').charCodeAt(1)]`))
      .toEqual(['', 'Zg==', 'Zm8=', 'Zm9v', '//4=', 'foo', 'foob', 'fo', 0xfe]);
  });

  it('throws InvalidCharacterError DOMExceptions', async () => {
    expect(await evaluateError(`btoa('€')`)).toMatchObject({ type: 'DOMException', name: 'InvalidCharacterError' });
    expect(await evaluateError(`atob('Zm9v!')`)).toMatchObject({ type: 'DOMException', name: 'InvalidCharacterError' });
    expect(await evaluateError(`atob('Z')`)).toMatchObject({ type: 'DOMException', name: 'InvalidCharacterError' });
    expect(await evaluate(`try { atob('%'); } catch (e) { return [e instanceof DOMException, e instanceof Error, e.code]; }`)).toEqual([true, true, 5]);
  });
});

describe('structuredClone', () => {
  it('deep-copies the serializable types, keeping cycles and shared references', async () => {
    expect(await evaluate(`
      const buf = new ArrayBuffer(8);
      const src = { n: 1, s: 'x', big: 10n, date: new Date(0), re: /a+/gi, map: new Map([[1, { deep: true }]]), set: new Set(['a']),
        u8: new Uint8Array(buf, 2, 3), f64: new Float64Array(buf, 0, 1), err: new RangeError('bad'), arr: [1, , 3], boxed: new String('b') };
      src.self = src;
      src.u8[0] = 7;
      const c = structuredClone(src);
      c.u8[1] = 9;
      return {
        distinct: c !== src, cycle: c.self === c, big: typeof c.big, date: c.date instanceof Date && c.date.getTime() === 0,
        re: [c.re.source, c.re.flags], map: c.map.get(1), set: [...c.set], u8: [...c.u8], origU8: [...src.u8],
        sharedBuffer: c.u8.buffer === c.f64.buffer, err: [c.err instanceof RangeError, c.err.message], holes: 1 in c.arr, len: c.arr.length,
        boxed: typeof c.boxed === 'object' && c.boxed.valueOf() === 'b',
      };
    `)).toEqual({
      distinct: true, cycle: true, big: 'bigint', date: true, re: ['a+', 'gi'], map: { deep: true }, set: ['a'], u8: [7, 9, 0], origU8: [7, 0, 0],
      sharedBuffer: true, err: [true, 'bad'], holes: false, len: 3, boxed: true,
    });
  });

  it('clones Blobs, Files and DOMExceptions', async () => {
    expect(await evaluate(`
      const [b, f, e] = structuredClone([new Blob(['blob'], { type: 'text/x' }), new File(['file'], 'f.txt', { lastModified: 5 }), new DOMException('m', 'AbortError')]);
      return [b instanceof Blob, await b.text(), b.type, f instanceof File, f.name, f.lastModified, await f.text(), e instanceof DOMException, e.name, e.message];
    `)).toEqual([true, 'blob', 'text/x', true, 'f.txt', 5, 'file', true, 'AbortError', 'm']);
  });

  it('throws DataCloneError for functions, symbols and platform objects', async () => {
    for (const v of ['() => 1', 'Symbol("s")', '{ f() {} }', 'new Headers()', 'new Request("https://x.test")']) {
      expect(await evaluateError(`structuredClone(${v})`), v).toMatchObject({ type: 'DOMException', name: 'DataCloneError' });
    }
  });
});

describe('crypto', () => {
  it('digests with SHA-1/256/384/512 from any BufferSource', async () => {
    const out = await evaluate<Record<string, string>>(`
      const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, '0')).join('');
      const abc = new TextEncoder().encode('abc');
      const p = crypto.subtle.digest('SHA-256', abc);
      return { isPromise: p instanceof Promise, sha256: hex(await p), sha1: hex(await crypto.subtle.digest({ name: 'sha-1' }, abc.buffer)),
        sha384: hex(await crypto.subtle.digest('SHA-384', new DataView(abc.buffer))), sha512: hex(await crypto.subtle.digest('SHA-512', abc)) };
    `);
    expect(out.sha256).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    for (const alg of ['sha1', 'sha384', 'sha512'] as const) expect(out[alg]).toBe(createHash(alg).update('abc').digest('hex'));
    expect(out.isPromise).toBe(true);
    expect(await evaluateError(`await crypto.subtle.digest('SHA3-256', new Uint8Array(1))`)).toMatchObject({ type: 'DOMException', name: 'NotSupportedError' });
  });

  it('randomUUID is a v4 UUID and getRandomValues fills integer arrays', async () => {
    const out = await evaluate<{ uuids: string[]; filled: boolean; same: boolean; big: string }>(`
      const a = new Uint32Array(64);
      const r = crypto.getRandomValues(a);
      return { uuids: [crypto.randomUUID(), crypto.randomUUID()], filled: a.some((x) => x !== 0), same: r === a,
        big: typeof crypto.getRandomValues(new BigUint64Array(2))[0] };
    `);
    for (const u of out.uuids) expect(u).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(out.uuids[0]).not.toBe(out.uuids[1]);
    expect(out).toMatchObject({ filled: true, same: true, big: 'bigint' });
  });

  it('crypto and crypto.subtle are instances of classes user code cannot construct', async () => {
    expect(await evaluate(`
      const out = [crypto instanceof Crypto, crypto.subtle instanceof SubtleCrypto, String(crypto), String(crypto.subtle)];
      for (const C of [Crypto, SubtleCrypto]) { try { new C(); out.push('constructed'); } catch (e) { out.push(e.constructor.name + ': ' + e.message); } }
      return out;
    `)).toEqual([true, true, '[object Crypto]', '[object SubtleCrypto]', 'TypeError: Illegal constructor', 'TypeError: Illegal constructor']);
  });

  it('getRandomValues refuses float arrays and more than 65536 bytes', async () => {
    expect(await evaluateError(`crypto.getRandomValues(new Float32Array(4))`)).toMatchObject({ type: 'DOMException', name: 'TypeMismatchError' });
    expect(await evaluateError(`crypto.getRandomValues(new Uint8Array(65537))`)).toMatchObject({ type: 'DOMException', name: 'QuotaExceededError' });
    expect(await evaluate(`return crypto.getRandomValues(new Uint8Array(65536)).length`)).toBe(65536);
  });
});

describe('console', () => {
  it('reaches the host log with levels and readable formatting', async () => {
    const reply = await runWorker(`export default { fetch() {
      console.log('plain', 1, 'two', { a: [1, { b: { c: {} } }], s: 'q' }, null, undefined);
      console.log({ m: new Map([['k', new Set([1])]]), long: 'x'.repeat(60) });
      console.info('%s is %d years and %i%%', 'Bob', 42.5, 7.9);
      console.warn(new Uint8Array([1, 2]), [1, 'x'], Symbol('s'), 10n, () => 1, class Foo {});
      console.debug(new Headers({ 'X-A': '1' }), new URL('https://x.test/p'));
      const cyc = { name: 'c' }; cyc.self = cyc;
      console.error(new TypeError('boom'), cyc);
      console.assert(1 === 2, 'math');
      return new Response('ok');
    } }`);
    const lines = reply.logs.map((l) => `${l.level} ${l.message}`);
    expect(lines[0]).toBe("log plain 1 two { a: [ 1, { b: [Object] } ], s: 'q' } null undefined");
    expect(lines[1]).toBe(`log {\n  m: Map(1) { 'k' => Set(1) { 1 } },\n  long: '${'x'.repeat(60)}'\n}`);
    expect(lines[2]).toBe('info Bob is 42.5 years and 7%');
    expect(lines[3]).toBe("warn Uint8Array(2) [ 1, 2 ] [ 1, 'x' ] Symbol(s) 10n [Function (anonymous)] [class Foo]");
    expect(lines[4]).toBe("debug Headers { 'x-a' => '1' } URL { href: 'https://x.test/p' }");
    expect(lines[5]).toMatch(/^error TypeError: boom\n\s+at .*\n[\s\S]*\{ name: 'c', self: \[Circular\] \}$/);
    expect(lines[6]).toBe('error Assertion failed: math');
  });
});

describe('timers', () => {
  it('setTimeout, clearTimeout, setInterval and queueMicrotask run in order', async () => {
    expect(await evaluate(`
      const order = [];
      const t0 = Date.now();
      queueMicrotask(() => order.push('micro'));
      const cancelled = setTimeout(() => order.push('cancelled'), 5);
      clearTimeout(cancelled);
      setTimeout((a, b) => order.push('timeout ' + a + b), 20, 'x', 'y');
      setTimeout(() => order.push('first'), 1);
      let n = 0;
      await new Promise((resolve) => {
        const id = setInterval(() => { order.push('tick' + ++n); if (n === 3) { clearInterval(id); resolve(); } }, 10);
      });
      await new Promise((r) => setTimeout(r, 30));
      return { order, waited: Date.now() - t0 >= 40, ids: typeof cancelled };
    `)).toEqual({ order: ['micro', 'first', 'tick1', 'timeout xy', 'tick2', 'tick3'], waited: true, ids: 'number' });
  });

  it('host calls settle by ticket: 300 timers and HMACs in flight at once, answered out of order, with Map and Promise replaced', async () => {
    // Every asynchronous host call (timers, crypto.subtle, fetch, stub.fetch) comes back
    // through __edgeHostSettle by its ticket (HostAsync in node-agent/abi/bridge.ts). The
    // shim's table must not use what a worker can replace.
    expect(await evaluate(`
      const P = Promise;
      const key = await crypto.subtle.importKey('raw', new TextEncoder().encode('k'), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
      const spin = () => { throw new Error('patched'); };
      const M = Map.prototype, saved = [M.get, M.set, M.delete];
      M.get = spin; M.set = spin; M.delete = spin;
      globalThis.Promise = function Fake() { throw new Error('patched Promise'); };
      const order = [];
      const waits = [];
      // The odd ones are asked first and answered last.
      for (let i = 199; i >= 0; i--) waits.push(new P((r) => setTimeout(() => { order.push(i); r(); }, i % 2 ? 60 : 0)));
      const macs = [];
      for (let i = 0; i < 100; i++) macs.push(crypto.subtle.sign('HMAC', key, new TextEncoder().encode('n' + i)));
      await P.all(waits);
      const signed = await P.all(macs);
      // Put back before returning: the shim's dispatch has Map lookups of its own.
      [M.get, M.set, M.delete] = saved;
      globalThis.Promise = P;
      const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, '0')).join('');
      return { fired: order.length, distinct: new Set(order).size, evensFirst: order.slice(0, 100).every((v) => v % 2 === 0), first: hex(signed[0]), last: hex(signed[99]) };
    `)).toEqual({
      fired: 200, distinct: 200, evensFirst: true,
      first: createHmac('sha256', 'k').update('n0').digest('hex'), last: createHmac('sha256', 'k').update('n99').digest('hex'),
    });
  });

  it('reports an exception thrown by a timer callback to the log', async () => {
    const reply = await runWorker(`export default { async fetch() {
      setTimeout(() => { throw new Error('from timer'); }, 1);
      await new Promise((r) => setTimeout(r, 20));
      return new Response('ok');
    } }`);
    expect(reply.text).toBe('ok');
    expect(reply.logs.some((l) => l.level === 'error' && l.message.startsWith('Uncaught Error: from timer'))).toBe(true);
  });
});

describe('Event, EventTarget and AbortController', () => {
  it('dispatches to listeners with once, handleEvent and preventDefault', async () => {
    expect(await evaluate(`
      const t = new EventTarget();
      const seen = [];
      t.addEventListener('ping', (e) => seen.push('fn:' + e.type + ':' + (e.target === t)), { once: true });
      t.addEventListener('ping', { handleEvent(e) { seen.push('obj'); e.preventDefault(); } });
      const r1 = t.dispatchEvent(new Event('ping', { cancelable: true }));
      const r2 = t.dispatchEvent(new CustomEvent('ping', { detail: 1 }));
      return { seen, r1, r2 };
    `)).toEqual({ seen: ['fn:ping:true', 'obj', 'obj'], r1: false, r2: true });
  });

  it('aborts with a reason, fires onabort and listeners, and AbortSignal.timeout/any work', async () => {
    expect(await evaluate(`
      const c = new AbortController();
      const seen = [];
      c.signal.onabort = () => seen.push('onabort');
      c.signal.addEventListener('abort', () => seen.push('listener'));
      c.abort();
      let thrown;
      try { c.signal.throwIfAborted(); } catch (e) { thrown = e.name; }
      const t = AbortSignal.timeout(5);
      await new Promise((r) => t.addEventListener('abort', r));
      const any = AbortSignal.any([new AbortController().signal, AbortSignal.abort('why')]);
      let illegal;
      try { new AbortSignal(); } catch (e) { illegal = e.constructor.name; }
      return { seen, aborted: c.signal.aborted, reason: c.signal.reason.name, thrown, timeout: t.reason.name, any: any.reason, illegal };
    `)).toEqual({ seen: ['onabort', 'listener'], aborted: true, reason: 'AbortError', thrown: 'AbortError', timeout: 'TimeoutError', any: 'why', illegal: 'TypeError' });
  });
});

describe('the platform', () => {
  it('defines the Workers globals with their own names, writable as on workerd', async () => {
    const out = await evaluate<{ names: Record<string, string>; frozen: boolean[]; writable: unknown[]; misc: unknown[] }>(`
      const names = {};
      for (const n of ['Headers', 'Request', 'Response', 'URL', 'URLSearchParams', 'ReadableStream', 'TransformStream', 'TextEncoder', 'Blob', 'FormData', 'AbortController', 'DOMException'])
        names[n] = globalThis[n].name;
      const d = Object.getOwnPropertyDescriptor(globalThis, 'fetch');
      return { names, frozen: [Object.isFrozen(Response.prototype), Object.isFrozen(crypto), Object.isFrozen(crypto.subtle), Object.isFrozen(console)],
        writable: [d.writable, d.configurable, d.enumerable],
        misc: [Object.prototype.toString.call(new Headers()), self === globalThis, navigator.userAgent, typeof performance.now()] };
    `);
    for (const [k, v] of Object.entries(out.names)) expect(v).toBe(k);
    // What workerd answers to the same questions (checked against workerd 2026-11-17).
    expect(out.frozen).toEqual([false, false, false, false]);
    expect(out.writable).toEqual([true, true, false]);
    expect(out.misc).toEqual(['[object Headers]', true, 'Cloudflare-Workers', 'number']);
  });

  it('keeps a request\'s patch of the platform for the worker\'s next requests, as workerd does', async () => {
    // Instrumentation libraries wrap fetch in a worker's first request (Sentry's fetch
    // integration is set up by the init() its withSentry() wrapper runs per request).
    const w = await TestWorker.load(`
      let n = 0;
      export default { async fetch() {
        n += 1;
        if (n === 1) {
          const original = globalThis.fetch;
          globalThis.fetch = (...args) => original(...args);
          globalThis.fetch.wrapped = true;
          Response.prototype.text = function () { return Promise.resolve('patched'); };
          Headers.prototype.getAll = function (name) { return [this.get(name)]; };
          return new Response('first');
        }
        return Response.json({ wrapped: globalThis.fetch.wrapped === true, text: await new Response('real').text(), getAll: new Headers({ a: '1' }).getAll('a') });
      } };
    `);
    try {
      expect((await w.fetch()).text).toBe('first');
      expect(JSON.parse((await w.fetch()).text)).toEqual({ wrapped: true, text: 'patched', getAll: ['1'] });
    } finally {
      w.dispose();
    }
  });

  it('answers what the worker returned after it sabotages the platform\'s own prototypes', async () => {
    // The runtime makes the request and reads the response through state it holds itself,
    // never through the public methods and accessors a worker can replace. (The worker's
    // own calls do go through them: that it may break, for itself, as on Workers.)
    const w = await TestWorker.load(`
      let next;
      export default { async fetch(request) {
        if (next) return next;
        const first = new Response('sabotaged', { status: 201, headers: { 'x-kept': 'yes' } });
        next = new Response(new ReadableStream({ start(c) { c.enqueue(new Uint8Array([104, 105])); c.close(); } }), { status: 202, headers: { 'x-again': '1' } });
        for (const cls of [Headers, Response, Request, ReadableStream, ReadableStreamDefaultReader, ReadableStreamDefaultController, WritableStream, TransformStream, URL, URLSearchParams, TextEncoder, TextDecoder, Blob, AbortSignal]) {
          for (const key of Object.getOwnPropertyNames(cls.prototype)) {
            if (key === 'constructor') continue;
            const d = Object.getOwnPropertyDescriptor(cls.prototype, key);
            Object.defineProperty(cls.prototype, key, d.get ? { get() { throw new Error('sabotaged ' + key); }, configurable: true } : { value: () => { throw new Error('sabotaged ' + key); }, writable: true, configurable: true });
          }
        }
        return first;
      } };
    `);
    try {
      const first = await w.fetch();
      expect([first.status, first.text, first.headers]).toEqual([201, 'sabotaged', [['content-type', 'text/plain;charset=UTF-8'], ['x-kept', 'yes']]]);
      const second = await w.fetch({ method: 'POST', chunks: ['body', 'sent'] });
      expect([second.status, second.text, second.headers]).toEqual([202, 'hi', [['x-again', '1']]]);
    } finally {
      w.dispose();
    }
  });

  it('keeps working after a worker sabotages Array and Set methods in an earlier request', async () => {
    const w = await TestWorker.load(`
      let sabotaged = false;
      export default { async fetch(request) {
        if (!sabotaged) {
          sabotaged = true;
          for (const m of ['push', 'pop', 'shift', 'unshift', 'map', 'filter', 'some', 'find', 'findIndex', 'includes', 'join', 'sort', 'slice', 'splice'])
            Array.prototype[m] = function () { return -1; };
          for (const m of ['add', 'has', 'delete']) Set.prototype[m] = function () { return false; };
          return new Response('sabotaged');
        }
        const h = new Headers({ b: '2', a: '1' });
        h.append('a', '3');
        const p = new URLSearchParams('x=1&y=2');
        p.append('z', '3');
        const form = new FormData();
        form.append('k', 'v');
        const parsedForm = await new Response(form).formData();
        const piped = await new Response(request.body.pipeThrough(new TransformStream())).text();
        const timer = await new Promise((resolve) => setTimeout(() => resolve('fired'), 1));
        const t = new EventTarget();
        let heard = false;
        t.addEventListener('x', () => { heard = true; });
        t.dispatchEvent(new Event('x'));
        console.log({ list: [1, 2] }, new Map([[1, 2]]));
        return Response.json({ get: h.get('a'), entries: [...h], params: p.toString(), form: parsedForm.get('k'), piped, timer, heard,
          clone: structuredClone({ m: new Map([[1, { v: 2 }]]) }).m.get(1).v });
      } };
    `);
    try {
      expect((await w.fetch()).text).toBe('sabotaged');
      const reply = await w.fetch({ method: 'POST', chunks: ['stream', 'ed'] });
      expect(JSON.parse(reply.text)).toEqual({
        get: '1, 3', entries: [['a', '1, 3'], ['b', '2']], params: 'x=1&y=2&z=3', form: 'v', piped: 'streamed', timer: 'fired', heard: true, clone: 2,
      });
      expect(reply.headers).toEqual([['content-type', 'application/json']]);
      expect(w.logs.at(-1)).toEqual({ level: 'log', message: '{ list: [ 1, 2 ] } Map(1) { 1 => 2 }' });
    } finally {
      w.dispose();
    }
  });

  it('lets a module wrap a global at load time', async () => {
    const w = await TestWorker.load(`
      const original = globalThis.fetch;
      globalThis.fetch = (...args) => original(...args);
      export default { fetch() { return new Response(String(globalThis.fetch !== original)); } };
    `);
    try {
      expect((await w.fetch()).text).toBe('true');
    } finally {
      w.dispose();
    }
  });
});
