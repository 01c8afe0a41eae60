import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestWorker } from './run-worker.js';

// When a request is over, the host frees its isolate at once (finishNow) instead of asking
// the isolate with a settle() round trip: a client's next request then finds the isolate
// idle, not a cold one beside it. Frameworks that rewrap their response (Hono, after its
// middleware sets a header) answer with a streamed body, so its end must say so too.

const SOURCE = `
let served = 0;
let waited = 0;
export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    served++;
    if (url.pathname === '/rewrap') return new Response(new Response('rewrapped ' + served).body, { headers: { 'x-a': '1' } });
    if (url.pathname === '/wait') {
      ctx.waitUntil(new Promise((r) => setTimeout(r, 30)).then(() => { waited++; }));
      return new Response(new Response('waiting').body);
    }
    if (url.pathname === '/echo') return new Response('got ' + (await request.text()));
    if (url.pathname === '/unread') return new Response('did not read');
    return new Response(JSON.stringify({ served, waited }));
  },
};`;

describe('a request is over when nothing of it is left in the isolate', () => {
  let w: TestWorker;
  beforeAll(async () => { w = await TestWorker.load(SOURCE, { name: 'request-over' }); });
  afterAll(() => w?.dispose());

  it('a streamed response body read to its end, with no waitUntil, ends the request', async () => {
    const { id, response } = await w.start({ url: 'http://x/rewrap' });
    expect(response.body).toBe('stream');
    expect((await w.collect(id, response)).text).toBe('rewrapped 1');
    expect(w.isolate.finishNow(id)).toBe(true);
    expect(w.isolate.busy).toBe(false);
  });

  it('one with waitUntil work still running waits for settle(), which runs it', async () => {
    const { id, response } = await w.start({ url: 'http://x/wait' });
    expect((await w.collect(id, response)).text).toBe('waiting');
    expect(w.isolate.finishNow(id)).toBe(false);
    await w.isolate.finish(id);
    expect(JSON.parse((await w.fetch({ url: 'http://x/state' })).text)).toMatchObject({ waited: 1 });
  });

  it('a streamed request body the handler read to its end ends the request with a whole response', async () => {
    const { id, response } = await w.start({ url: 'http://x/echo', method: 'POST', chunks: ['a', 'b', 'c'] });
    expect((await w.collect(id, response)).text).toBe('got abc');
    expect(w.isolate.finishNow(id)).toBe(true);
  });

  it('one whose body is still being sent does not', async () => {
    const { id, response } = await w.start({ url: 'http://x/unread', method: 'POST' }, true);
    expect((await w.collect(id, response)).text).toBe('did not read');
    expect(w.isolate.finishNow(id)).toBe(false);
    w.isolate.pushBody(id, null);
    await w.isolate.finish(id);
    expect(w.isolate.busy).toBe(false);
  });
});
