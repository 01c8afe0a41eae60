import { describe, expect, it } from 'vitest';
import { evaluate, evaluateError, runWorker } from './run-worker.js';

describe('Headers', () => {
  it('is case-insensitive and combines appended values with ", "', async () => {
    expect(await evaluate(`
      const h = new Headers({ 'Content-Type': 'text/plain' });
      h.append('X-Multi', 'a');
      h.append('x-multi', 'b');
      return { ct: h.get('CONTENT-TYPE'), multi: h.get('X-MULTI'), has: h.has('x-Multi'), missing: h.get('nope') };
    `)).toEqual({ ct: 'text/plain', multi: 'a, b', has: true, missing: null });
  });

  it('iterates sorted by lower-case name, keeping each set-cookie apart', async () => {
    expect(await evaluate(`
      const h = new Headers([['Zeta', '1'], ['Set-Cookie', 'a=1'], ['alpha', '2'], ['set-cookie', 'b=2'], ['Alpha', '3']]);
      return { entries: [...h], keys: [...h.keys()], cookies: h.getSetCookie(), all: h.getAll('Set-Cookie') };
    `)).toEqual({
      entries: [['alpha', '2, 3'], ['set-cookie', 'a=1'], ['set-cookie', 'b=2'], ['zeta', '1']],
      keys: ['alpha', 'set-cookie', 'set-cookie', 'zeta'],
      cookies: ['a=1', 'b=2'],
      all: ['a=1', 'b=2'],
    });
  });

  it('set replaces every value, delete removes them, values are trimmed', async () => {
    expect(await evaluate(`
      const h = new Headers([['a', '1'], ['b', '2'], ['A', '3']]);
      h.set('a', '  x \\t');
      const afterSet = [...h];
      h.delete('A');
      const seen = [];
      h.forEach((v, k) => seen.push(k + '=' + v));
      return { afterSet, afterDelete: [...h], seen };
    `)).toEqual({ afterSet: [['a', 'x'], ['b', '2']], afterDelete: [['b', '2']], seen: ['b=2'] });
  });

  it('refuses invalid names and values with TypeError', async () => {
    const badName = await evaluateError(`new Headers().append('bad name', 'x')`);
    expect(badName).toMatchObject({ type: 'TypeError', message: expect.stringContaining('Invalid header name') });
    const badValue = await evaluateError(`new Headers().set('x', 'a\\r\\nb')`);
    expect(badValue).toMatchObject({ type: 'TypeError', message: expect.stringContaining('Invalid value') });
    const badPair = await evaluateError(`new Headers([['a', 'b', 'c']])`);
    expect(badPair.type).toBe('TypeError');
  });

  it('makes the incoming request headers immutable, as Workers does', async () => {
    const err = await evaluateError(`request.headers.set('x', '1')`);
    expect(err).toMatchObject({ type: 'TypeError', message: "Can't modify immutable headers." });
    expect(await evaluate(`
      const copy = new Request(request);
      copy.headers.set('x', '1');
      return copy.headers.get('x');
    `)).toBe('1');
  });
});

describe('Request', () => {
  it('exposes the incoming request with lower-case header names', async () => {
    expect(await evaluate(`return { url: request.url, method: request.method, ua: request.headers.get('User-Agent'), redirect: request.redirect, text: await request.text() }`, {
      url: 'http://example.com/b?q=1', method: 'POST', headers: [['user-agent', 'vitest']], body: 'hello',
    })).toEqual({ url: 'http://example.com/b?q=1', method: 'POST', ua: 'vitest', redirect: 'manual', text: 'hello' });
  });

  it('normalizes methods, validates URLs and refuses GET bodies', async () => {
    expect(await evaluate(`
      const r = new Request('https://example.com/x', { method: 'post', body: 'x' });
      const p = new Request('https://example.com/x', { method: 'patch' });
      return [r.method, p.method, r.headers.get('content-type')];
    `)).toEqual(['POST', 'patch', 'text/plain;charset=UTF-8']);
    expect(await evaluateError(`new Request('/relative')`)).toMatchObject({ type: 'TypeError', message: expect.stringContaining('Invalid URL') });
    expect(await evaluateError(`new Request('https://example.com', { method: 'GET', body: 'x' })`)).toMatchObject({
      type: 'TypeError', message: 'Request with a GET or HEAD method cannot have a body.',
    });
    expect(await evaluateError(`new Request('https://example.com', { method: 'bad method' })`)).toMatchObject({ type: 'TypeError' });
  });

  it('moves the body when a Request is built from another, and clones independently', async () => {
    expect(await evaluate(`
      const a = new Request('https://example.com', { method: 'PUT', body: 'payload' });
      const b = new Request(a, { headers: { 'x-new': '1' } });
      const c = b.clone();
      return { aUsed: a.bodyUsed, b: await b.text(), c: await c.text(), x: c.headers.get('x-new'), method: c.method };
    `)).toEqual({ aUsed: true, b: 'payload', c: 'payload', x: '1', method: 'PUT' });
  });
});

describe('Response', () => {
  it('defaults and content types', async () => {
    expect(await evaluate(`
      const r = new Response('hi');
      const e = new Response();
      const p = new Response(new URLSearchParams({ a: '1 2' }));
      return { status: r.status, ok: r.ok, statusText: r.statusText, type: r.type, redirected: r.redirected, ct: r.headers.get('content-type'),
        emptyBody: e.body, emptyText: await e.text(), params: await p.text(), pct: p.headers.get('content-type') };
    `)).toEqual({
      status: 200, ok: true, statusText: '', type: 'default', redirected: false, ct: 'text/plain;charset=UTF-8',
      emptyBody: null, emptyText: '', params: 'a=1+2', pct: 'application/x-www-form-urlencoded;charset=UTF-8',
    });
  });

  it('can be read only once', async () => {
    expect(await evaluate(`
      const r = new Response('once');
      const first = await r.text();
      let second;
      try { await r.text(); } catch (e) { second = e.constructor.name + ': ' + e.message; }
      let cloneErr;
      try { r.clone(); } catch (e) { cloneErr = e.constructor.name; }
      return { first, used: r.bodyUsed, second, cloneErr };
    `)).toEqual({
      first: 'once', used: true, cloneErr: 'TypeError',
      second: expect.stringMatching(/^TypeError: .*Body has already been used/),
    });
  });

  it('reads bodies as text, json, arrayBuffer, bytes and blob; clones read independently', async () => {
    expect(await evaluate(`
      const r = new Response('{"a":[1,2]}', { headers: { 'content-type': 'application/json' } });
      const c1 = r.clone();
      const c2 = r.clone();
      const c3 = r.clone();
      const blob = await c3.blob();
      return { json: await r.json(), text: await c1.text(), ab: [...new Uint8Array(await c2.arrayBuffer())].length,
        blobType: blob.type, blobText: await blob.text(), bytes: (await new Response(new Uint8Array([1, 2, 3])).bytes()).join() };
    `)).toEqual({ json: { a: [1, 2] }, text: '{"a":[1,2]}', ab: 11, blobType: 'application/json', blobText: '{"a":[1,2]}', bytes: '1,2,3' });
  });

  it('Response.json sets the content type and keeps init', async () => {
    const reply = await runWorker(`export default { fetch() { return Response.json({ ok: true }, { status: 201, headers: { 'x-a': 'b' } }); } }`);
    expect(reply.status).toBe(201);
    expect(reply.headers).toEqual([['content-type', 'application/json'], ['x-a', 'b']]);
    expect(JSON.parse(reply.text)).toEqual({ ok: true });
    expect(await evaluateError(`Response.json(undefined)`)).toMatchObject({ type: 'TypeError' });
  });

  it('enforces status ranges and null-body statuses', async () => {
    for (const status of [199, 600, 0]) {
      expect(await evaluateError(`new Response('x', { status: ${status} })`)).toMatchObject({ type: 'RangeError' });
    }
    for (const status of [204, 205, 304]) {
      expect(await evaluateError(`new Response('x', { status: ${status} })`)).toMatchObject({ type: 'TypeError', message: expect.stringContaining('null body status') });
    }
    expect(await evaluate(`return [new Response(null, { status: 204 }).status, new Response('', { status: 599 }).ok, new Response(null, { status: 404 }).ok]`))
      .toEqual([204, false, false]);
    expect(await evaluateError(`new Response('x', { statusText: 'bad\\n' })`)).toMatchObject({ type: 'TypeError' });
  });

  it('Response.redirect checks the status and URL and has immutable headers', async () => {
    expect(await evaluate(`
      const r = Response.redirect('https://example.com/a b', 301);
      const d = Response.redirect('https://example.com/');
      let immutable;
      try { r.headers.set('x', '1'); } catch (e) { immutable = e.constructor.name; }
      return { status: r.status, location: r.headers.get('location'), defaultStatus: d.status, immutable };
    `)).toEqual({ status: 301, location: 'https://example.com/a%20b', defaultStatus: 302, immutable: 'TypeError' });
    expect(await evaluateError(`Response.redirect('https://example.com', 200)`)).toMatchObject({ type: 'RangeError' });
    expect(await evaluateError(`Response.redirect('/relative', 302)`)).toMatchObject({ type: 'TypeError' });
  });

  it('Response.error is a network error', async () => {
    expect(await evaluate(`const r = Response.error(); return [r.type, r.status, r.ok, r.body];`)).toEqual(['error', 0, false, null]);
  });

  it('sends sorted, combined headers with set-cookie kept apart', async () => {
    const reply = await runWorker(`export default { fetch() {
      const h = new Headers();
      h.append('X-B', '1'); h.append('Set-Cookie', 'a=1'); h.append('x-b', '2'); h.append('set-cookie', 'b=2'); h.append('A', 'z');
      return new Response('ok', { status: 418, statusText: "I'm a teapot", headers: h });
    } }`);
    expect(reply).toMatchObject({ status: 418, statusText: "I'm a teapot", bodyKind: 'whole', text: 'ok' });
    expect(reply.headers).toEqual([
      ['a', 'z'], ['content-type', 'text/plain;charset=UTF-8'], ['set-cookie', 'a=1'], ['set-cookie', 'b=2'], ['x-b', '1, 2'],
    ]);
  });

  it('hands typed-array, ArrayBuffer and URLSearchParams bodies over whole', async () => {
    for (const [expr, expected] of [
      ['new Uint16Array([0x6968])', 'hi'],
      ['new Uint8Array([104, 105, 33]).buffer', 'hi!'],
      ['new DataView(new Uint8Array([0, 111, 107, 0]).buffer, 1, 2)', 'ok'],
      ["new URLSearchParams('a=1&b=2')", 'a=1&b=2'],
      ["new Blob(['b', new Uint8Array([108]), 'ob'])", 'blob'],
    ] as const) {
      const reply = await runWorker(`export default { fetch() { return new Response(${expr}); } }`);
      expect(reply, expr).toMatchObject({ bodyKind: 'whole', text: expected });
    }
  });

  it('copies status, statusText and headers from another Response used as init', async () => {
    expect(await evaluate(`
      const a = new Response('body', { status: 202, statusText: 'Accepted', headers: { 'x-a': '1' } });
      const b = new Response(a.body, a);
      b.headers.set('x-b', '2');
      return { status: b.status, statusText: b.statusText, headers: [...b.headers], text: await b.text(), aUsed: a.bodyUsed, aHeaders: [...a.headers] };
    `)).toEqual({
      status: 202, statusText: 'Accepted', headers: [['content-type', 'text/plain;charset=UTF-8'], ['x-a', '1'], ['x-b', '2']], text: 'body', aUsed: true,
      aHeaders: [['content-type', 'text/plain;charset=UTF-8'], ['x-a', '1']],
    });
  });

  it('supports subclasses', async () => {
    const reply = await runWorker(`class Html extends Response {
      constructor(html) { super(html, { headers: { 'content-type': 'text/html' } }); }
    }
    export default { fetch() { const r = new Html('<p>hi</p>'); return r instanceof Response ? r : null; } }`);
    expect(reply).toMatchObject({ status: 200, text: '<p>hi</p>', headers: [['content-type', 'text/html']] });
  });

  it('rejects a handler that returns a used body', async () => {
    await expect(runWorker(`export default { async fetch() { const r = new Response('x'); await r.text(); return r; } }`))
      .rejects.toThrow(/already been used/);
  });
});

describe('FormData and Blob', () => {
  it('round-trips multipart/form-data and parses urlencoded forms', async () => {
    expect(await evaluate(`
      const fd = new FormData();
      fd.append('name', 'Zoë');
      fd.append('file', new Blob(['file body'], { type: 'text/plain' }), 'a.txt');
      const res = new Response(fd);
      const parsed = await res.formData();
      const file = parsed.get('file');
      const url = await new Request('https://x.test', { method: 'POST', body: new URLSearchParams('a=1&a=2&b=%C3%A9') }).formData();
      return { ct: res.headers.get('content-type').startsWith('multipart/form-data; boundary='), name: parsed.get('name'),
        file: [file instanceof File, file.name, file.type, await file.text()], url: [url.getAll('a'), url.get('b')] };
    `)).toEqual({ ct: true, name: 'Zoë', file: [true, 'a.txt', 'text/plain', 'file body'], url: [['1', '2'], 'é'] });
  });

  it('slices blobs', async () => {
    expect(await evaluate(`
      const b = new Blob(['hello world'], { type: 'TEXT/Plain' });
      return [b.size, b.type, await b.slice(6).text(), await b.slice(-5, -2).text(), b.slice(0, 1, 'x/y').type];
    `)).toEqual([11, 'text/plain', 'world', 'wor', 'x/y']);
  });
});
