import { describe, expect, it } from 'vitest';
import { bytes, evaluate, evaluateError, runWorker, TestWorker } from './run-worker.js';

const decode = (chunks: Uint8Array[]) => chunks.map((c) => new TextDecoder().decode(c));

describe('streamed request and response bodies', () => {
  it('delivers request body chunks in order through getReader().read()', async () => {
    const reply = await runWorker(`export default { async fetch(request) {
      const reader = request.body.getReader();
      const seen = [];
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        seen.push(new TextDecoder().decode(value));
      }
      return Response.json({ seen, used: request.bodyUsed });
    } }`, { method: 'POST', chunks: ['one ', 'two ', 'three'] });
    expect(JSON.parse(reply.text)).toEqual({ seen: ['one ', 'two ', 'three'], used: true });
  });

  it('reads a streamed request body with text() and async iteration', async () => {
    expect(JSON.parse((await runWorker(`export default { async fetch(request) {
      const copy = request.clone();
      let n = 0;
      for await (const chunk of copy.body) n += chunk.byteLength;
      return Response.json({ text: await request.text(), n });
    } }`, { method: 'PUT', chunks: ['a'.repeat(1000), 'é', 'z'] })).text)).toEqual({ text: `${'a'.repeat(1000)}éz`, n: 1003 });
  });

  it('clones a streamed body into two readable copies', async () => {
    const reply = await runWorker(`export default { async fetch(request) {
      const a = new Response(request.body);
      const b = a.clone();
      const [ta, tb] = await Promise.all([a.text(), b.text()]);
      return Response.json([ta, tb, a.bodyUsed, b.bodyUsed]);
    } }`, { method: 'POST', chunks: ['x', 'y', 'z'] });
    expect(JSON.parse(reply.text)).toEqual(['xyz', 'xyz', true, true]);
  });

  it('streams a request body straight back out, chunk by chunk', async () => {
    const reply = await runWorker(`export default { fetch(request) { return new Response(request.body, { headers: { 'content-type': 'text/plain' } }); } }`,
      { method: 'POST', chunks: ['alpha', 'beta', 'gamma'] });
    expect(reply.bodyKind).toBe('stream');
    expect(decode(reply.chunks)).toEqual(['alpha', 'beta', 'gamma']);
  });

  it('pipes the body through a TransformStream that upper-cases it', async () => {
    const reply = await runWorker(`export default { fetch(request) {
      const dec = new TextDecoder();
      const enc = new TextEncoder();
      const upper = new TransformStream({
        transform(chunk, controller) { controller.enqueue(enc.encode(dec.decode(chunk, { stream: true }).toUpperCase())); },
        flush(controller) { controller.enqueue(enc.encode('!')); },
      });
      return new Response(request.body.pipeThrough(upper));
    } }`, { method: 'POST', chunks: ['hello ', 'wörld'] });
    expect(reply.bodyKind).toBe('stream');
    expect(reply.text).toBe('HELLO WÖRLD!');
  });

  it('answers before the request body arrives and streams as chunks come in', async () => {
    const w = await TestWorker.load(`export default { fetch(request) {
      return new Response(request.body.pipeThrough(new TransformStream({
        transform(chunk, c) { c.enqueue(new TextEncoder().encode('[' + new TextDecoder().decode(chunk) + ']')); },
      })));
    } }`);
    try {
      const { id, response } = await w.start({ method: 'POST' }, true);
      expect(response.body).toBe('stream');
      w.isolate.pushBody(id, bytes('a'));
      expect(decode([(await w.isolate.pullBody(id))!])).toEqual(['[a]']);
      w.isolate.pushBody(id, bytes('b'));
      expect(decode([(await w.isolate.pullBody(id))!])).toEqual(['[b]']);
      w.isolate.pushBody(id, null);
      expect(await w.isolate.pullBody(id)).toBeNull();
      await w.isolate.finish(id);
    } finally {
      w.dispose();
    }
  });

  it('streams a response written after the handler returned (TransformStream + ctx.waitUntil)', async () => {
    const reply = await runWorker(`export default { fetch(request, env, ctx) {
      const { readable, writable } = new TransformStream();
      const writer = writable.getWriter();
      const enc = new TextEncoder();
      ctx.waitUntil((async () => {
        for (const part of ['first', 'second', 'third']) {
          await writer.write(enc.encode(part));
          await new Promise((r) => setTimeout(r, 5));
        }
        await writer.close();
      })());
      return new Response(readable);
    } }`);
    expect(reply.bodyKind).toBe('stream');
    expect(decode(reply.chunks)).toEqual(['first', 'second', 'third']);
  });

  it('tells the worker when the client goes away (cancel reaches the source)', async () => {
    const w = await TestWorker.load(`export default { fetch() {
      let n = 0;
      return new Response(new ReadableStream({
        pull(c) { c.enqueue(new TextEncoder().encode('chunk' + n++)); },
        cancel(reason) { console.log('cancelled: ' + reason.message); },
      }, { highWaterMark: 0 }));
    } }`);
    try {
      const { id, response } = await w.start();
      expect(response.body).toBe('stream');
      expect(decode([(await w.isolate.pullBody(id))!])).toEqual(['chunk0']);
      w.isolate.cancel(id, 'client disconnected');
      await w.isolate.finish(id);
      expect(w.logs).toContainEqual({ level: 'log', message: 'cancelled: client disconnected' });
    } finally {
      w.dispose();
    }
  });

  it('fails the response when a body stream yields something other than bytes', async () => {
    await expect(runWorker(`export default { fetch() {
      return new Response(new ReadableStream({ start(c) { c.enqueue('a string'); c.close(); } }));
    } }`)).rejects.toThrow(/chunks must be Uint8Array/);
  });
});

describe('ReadableStream', () => {
  it('reader: read, releaseLock, cancel, closed and locking errors', async () => {
    expect(await evaluate(`
      const rs = new ReadableStream({ start(c) { c.enqueue(1); c.enqueue(2); c.close(); } });
      const r = rs.getReader();
      const first = await r.read();
      let lockedErr;
      try { rs.getReader(); } catch (e) { lockedErr = e.constructor.name; }
      r.releaseLock();
      const r2 = rs.getReader();
      const second = await r2.read();
      const end = await r2.read();
      await r2.closed;
      let cancelled;
      const rs2 = new ReadableStream({ cancel(reason) { cancelled = reason; } });
      await rs2.cancel('why');
      return { first, second, end, lockedErr, locked: rs.locked, cancelled };
    `)).toEqual({ first: { value: 1, done: false }, second: { value: 2, done: false }, end: { done: true }, lockedErr: 'TypeError', locked: true, cancelled: 'why' });
  });

  it('pulls on demand with backpressure and propagates errors', async () => {
    expect(await evaluate(`
      const pulls = [];
      let i = 0;
      const rs = new ReadableStream({ pull(c) { pulls.push(c.desiredSize); if (i === 3) c.error(new RangeError('boom')); else c.enqueue(i++); } }, { highWaterMark: 2 });
      await new Promise((r) => setTimeout(r, 5));
      const before = pulls.length;
      const reader = rs.getReader();
      const got = [];
      let err;
      try { for (;;) { const { value, done } = await reader.read(); if (done) break; got.push(value); } } catch (e) { err = e.name + ': ' + e.message; }
      return { before, got, err };
    `)).toEqual({ before: 2, got: [0, 1], err: 'RangeError: boom' }); // error() drops the queued chunk 2, as the standard says
  });

  it('tee gives two independent branches', async () => {
    expect(await evaluate(`
      const [a, b] = new Response('tee me').body.tee();
      const [ta, tb] = await Promise.all([new Response(a).text(), new Response(b).text()]);
      return [ta, tb];
    `)).toEqual(['tee me', 'tee me']);
  });

  it('async iteration, early return cancels, ReadableStream.from', async () => {
    expect(await evaluate(`
      let cancelled = false;
      const rs = new ReadableStream({ start(c) { c.enqueue('a'); c.enqueue('b'); c.enqueue('c'); }, cancel() { cancelled = true; } });
      const seen = [];
      for await (const x of rs) { seen.push(x); if (x === 'b') break; }
      const from = [];
      for await (const x of ReadableStream.from((async function* () { yield 1; yield 2; })())) from.push(x);
      const fromArray = await new Response(ReadableStream.from([new Uint8Array([104]), new Uint8Array([105])])).text();
      return { seen, cancelled, from, fromArray };
    `)).toEqual({ seen: ['a', 'b'], cancelled: true, from: [1, 2], fromArray: 'hi' });
  });

  it('pipeTo a WritableStream, with preventClose and abort signals', async () => {
    expect(await evaluate(`
      const written = [];
      let closed = false;
      const sink = new WritableStream({ write(chunk) { written.push(chunk); }, close() { closed = true; } });
      await ReadableStream.from(['x', 'y', 'z']).pipeTo(sink);
      let keptOpen = true;
      const sink2 = new WritableStream({ close() { keptOpen = false; } });
      await ReadableStream.from(['1']).pipeTo(sink2, { preventClose: true });
      const controller = new AbortController();
      let aborted;
      const never = new ReadableStream({ cancel(r) { aborted = 'source cancelled: ' + r.name; } });
      const p = never.pipeTo(new WritableStream(), { signal: controller.signal });
      controller.abort();
      let pipeErr;
      try { await p; } catch (e) { pipeErr = e.name; }
      return { written, closed, keptOpen, aborted, pipeErr };
    `)).toEqual({ written: ['x', 'y', 'z'], closed: true, keptOpen: true, aborted: 'source cancelled: AbortError', pipeErr: 'AbortError' });
  });

  it('rejects BYOB readers and locked or used bodies with TypeError', async () => {
    expect(await evaluateError(`new ReadableStream({ type: 'bytes' }).getReader({ mode: 'byob' })`)).toMatchObject({ type: 'TypeError', message: expect.stringContaining('BYOB') });
    expect(await evaluateError(`const rs = new ReadableStream(); rs.getReader(); new Response(rs)`)).toMatchObject({ type: 'TypeError' });
    expect(await evaluateError(`const r = new Response('x'); r.body.getReader(); await r.text()`)).toMatchObject({ type: 'TypeError', message: expect.stringContaining('locked') });
  });
});

describe('WritableStream and TransformStream', () => {
  it('writer: ready, desiredSize, backpressure, close and abort', async () => {
    expect(await evaluate(`
      const log = [];
      let release;
      const ws = new WritableStream({
        write(chunk) { log.push('write ' + chunk); return new Promise((r) => { release = r; }); },
        close() { log.push('close'); },
      }, { highWaterMark: 2 });
      const w = ws.getWriter();
      await w.ready;
      const sizes = [w.desiredSize];
      const p1 = w.write('a');
      w.write('b');
      sizes.push(w.desiredSize);
      w.write('c');
      sizes.push(w.desiredSize);
      await new Promise((r) => setTimeout(r, 1));
      release(); await p1;
      await new Promise((r) => setTimeout(r, 1)); release();
      await new Promise((r) => setTimeout(r, 1)); release();
      await w.close();
      const aborting = new WritableStream({ abort(reason) { log.push('abort ' + reason); } });
      await aborting.abort('stop');
      let writeErr;
      try { await aborting.getWriter().write('x'); } catch (e) { writeErr = e; }
      return { log, sizes, writeErr };
    `)).toEqual({ log: ['write a', 'write b', 'write c', 'close', 'abort stop'], sizes: [2, 0, -1], writeErr: 'stop' });
  });

  it('TransformStream: identity by default, flush, terminate and errors reach both sides', async () => {
    expect(await evaluate(`
      const id = new TransformStream();
      const w = id.writable.getWriter();
      w.write('p'); w.close();
      const identity = [];
      for await (const x of id.readable) identity.push(x);
      const t = new TransformStream({ transform(chunk, c) { if (chunk === 'bad') throw new TypeError('bad chunk'); c.enqueue(chunk * 2); } });
      const tw = t.writable.getWriter();
      const tr = t.readable.getReader();
      tw.write(21);
      const doubled = (await tr.read()).value;
      let writeErr, readErr;
      // A write waits for the readable side to want more (backpressure), so read alongside.
      const wp = tw.write('bad');
      const rp = tr.read();
      try { await wp; } catch (e) { writeErr = e.message; }
      try { await rp; } catch (e) { readErr = e.message; }
      const term = new TransformStream({ start(c) { c.enqueue('only'); c.terminate(); } });
      const termOut = [];
      for await (const x of term.readable) termOut.push(x);
      return { identity, doubled, writeErr, readErr, termOut };
    `)).toEqual({ identity: ['p'], doubled: 42, writeErr: 'bad chunk', readErr: 'bad chunk', termOut: ['only'] });
  });

  it('queuing strategies and Workers stream classes', async () => {
    expect(await evaluate(`
      const s = new ByteLengthQueuingStrategy({ highWaterMark: 16 });
      const rs = new ReadableStream({ start(c) { c.enqueue(new Uint8Array(10)); } }, s);
      let desired;
      new ReadableStream({ start(c) { c.enqueue(new Uint8Array(10)); desired = c.desiredSize; } }, s);
      const fixed = new FixedLengthStream(3);
      const fw = fixed.writable.getWriter();
      fw.write(new Uint8Array([1, 2, 3]));
      fw.close();
      const out = await new Response(fixed.readable).arrayBuffer();
      const ident = new IdentityTransformStream();
      return { hwm: s.highWaterMark, size: s.size(new Uint8Array(7)), count: new CountQueuingStrategy({ highWaterMark: 1 }).size(), desired, fixed: out.byteLength,
        ident: ident.readable instanceof ReadableStream, locked: rs.locked };
    `)).toEqual({ hwm: 16, size: 7, count: 1, desired: 6, fixed: 3, ident: true, locked: false });
  });
});
