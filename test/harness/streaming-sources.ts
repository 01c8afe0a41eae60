import type { TestActorClass, TestWorker } from './actor-agents.js';

// The workers of the actor streaming tests (test/agent/actor-streaming.test.ts, across
// agents in test/integration/actors-streaming.test.ts). `rv` is the rendezvous server's
// base URL (test/harness/actor-agents.ts): the actors and workers report and wait there.

/** The actor's own limits: its wall limit is 1 s, far less than its streams last. */
export const ACTOR_LIMITS = { wallMsPerRequest: 1_000, cpuMsPerRequest: 300 };
export const HOLDER_WALL_MS = 1_500;

const actorSource = (rv: string) => `
const RV = ${JSON.stringify(rv)};
const enc = new TextEncoder();
export class Streamer {
  constructor(state) { this.state = state; }
  async fetch(request) {
    const url = new URL(request.url);
    const s = this.state.storage;
    const tag = url.searchParams.get('tag') ?? '';
    switch (url.pathname) {
      case '/stream': {
        // n lines, ms apart; the second waits until the test has received the first.
        const n = Number(url.searchParams.get('n'));
        const ms = Number(url.searchParams.get('ms'));
        let i = 0;
        return new Response(new ReadableStream({
          async pull(c) {
            if (i === 1) await (await fetch(RV + '/wait?k=' + tag + '-first')).text();
            if (i > 0) await new Promise((r) => setTimeout(r, ms));
            c.enqueue(enc.encode('chunk ' + i + '\\n'));
            i++;
            if (i === n) c.close();
          },
        }, { highWaterMark: 0 }), { headers: { 'content-type': 'text/plain' } });
      }
      case '/infinite': {
        // 16 KiB chunks, as fast as they are taken, until cancelled: cancel() records how far it got.
        let produced = 0;
        return new Response(new ReadableStream({
          pull(c) { produced++; c.enqueue(new Uint8Array(16384).fill(97)); },
          cancel(reason) { return s.put('cancel:' + tag, { reason: String(reason), produced }); },
        }));
      }
      case '/upload': {
        // Reads the body as it arrives, and tells the test when the first chunk is here.
        const reader = request.body.getReader();
        let bytes = 0;
        let reads = 0;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (reads === 0) await (await fetch(RV + '/hit?k=' + tag + '-actor-first&v=' + value.byteLength)).text();
          bytes += value.byteLength;
          reads++;
        }
        return Response.json({ bytes, reads });
      }
      case '/read-some': {
        // Reads n chunks of an endless body, then answers without reading on.
        const reader = request.body.getReader();
        let bytes = 0;
        for (let i = 0; i < Number(url.searchParams.get('n')); i++) bytes += (await reader.read()).value.byteLength;
        return Response.json({ bytes });
      }
      case '/read-then-wait': {
        // Reads n chunks, then holds its body unread until the test says go.
        const reader = request.body.getReader();
        let bytes = 0;
        for (let i = 0; i < Number(url.searchParams.get('n')); i++) bytes += (await reader.read()).value.byteLength;
        await (await fetch(RV + '/wait?k=' + tag + '-go')).text();
        return Response.json({ bytes });
      }
      case '/get': return Response.json((await s.get('cancel:' + tag)) ?? null);
      case '/ws': {
        const [client, server] = Object.values(new WebSocketPair());
        server.accept();
        server.addEventListener('message', (e) => server.send('echo ' + e.data));
        return new Response(null, { status: 101, webSocket: client });
      }
      default: return new Response('no such route', { status: 404 });
    }
  }
}
export default { fetch() { return new Response('actors only'); } };`;

const frontSource = `
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const stub = env.STREAMERS.get(env.STREAMERS.idFromName(url.searchParams.get('actor') ?? 'a'));
    switch (url.pathname) {
      case '/stream': case '/infinite': case '/get':
        return stub.fetch('http://actor' + url.pathname + url.search);
      case '/ws':
        // The upgrade goes on to the actor as it came (the 101 path of stub.fetch()).
        return stub.fetch(request);
      case '/upload':
        return stub.fetch('http://actor/upload' + url.search, { method: 'POST', body: request.body });
      case '/upload-slow': {
        // To an actor that reads a little and then holds the body unread for a while.
        const slow = env.SLOW.get(env.SLOW.idFromName(url.searchParams.get('actor') ?? 'a'));
        return slow.fetch('http://actor/read-then-wait' + url.search, { method: 'POST', body: request.body });
      }
      case '/cancel-after': {
        const r = await stub.fetch('http://actor/infinite' + url.search);
        const reader = r.body.getReader();
        for (let i = 0; i < Number(url.searchParams.get('n')); i++) await reader.read();
        // Time for an eager infrastructure to run ahead of this reader, were it to.
        if (url.searchParams.has('pause')) await new Promise((r) => setTimeout(r, Number(url.searchParams.get('pause'))));
        await reader.cancel('enough');
        return new Response('cancelled');
      }
      case '/abort-after': {
        const ac = new AbortController();
        const r = await stub.fetch('http://actor/infinite' + url.search, { signal: ac.signal });
        const reader = r.body.getReader();
        await reader.read();
        ac.abort();
        try { for (;;) if ((await reader.read()).done) return new Response('ended'); } catch (e) { return new Response('aborted: ' + e.name); }
      }
      case '/never-read': {
        await stub.fetch('http://actor/infinite' + url.search);
        return new Response('not reading');
      }
      case '/endless-upload': {
        let pulled = 0;
        let cancelled = null;
        let onCancel;
        const cancelledP = new Promise((r) => { onCancel = r; });
        const body = new ReadableStream({
          pull(c) { pulled++; c.enqueue(new Uint8Array(16384)); },
          cancel(reason) { cancelled = String(reason); onCancel(); },
        });
        const r = await stub.fetch('http://actor/read-some' + url.search, { method: 'POST', body });
        const answer = await r.json();
        await Promise.race([cancelledP, new Promise((r) => setTimeout(r, 5000))]);
        return Response.json({ answer, pulled, cancelled });
      }
      default: return new Response('no such route', { status: 404 });
    }
  },
};`;

// Holds the actor's body and never finishes: its own wall limit ends it.
const holderSource = `
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const stub = env.STREAMERS.get(env.STREAMERS.idFromName(url.searchParams.get('actor') ?? 'a'));
    const r = await stub.fetch('http://actor/infinite' + url.search);
    await r.body.getReader().read();
    await new Promise(() => {});
  },
};`;

export function streamingWorkers(rv: string): { workers: TestWorker[]; actors: TestActorClass[] } {
  return {
    workers: [
      { name: 'actors', host: 'actors.test', source: actorSource(rv), limits: ACTOR_LIMITS },
      // The same class with the default limits (30 s wall): for handlers that wait on the test.
      { name: 'patient', host: 'patient.test', source: actorSource(rv) },
      { name: 'front', host: 'front.test', source: frontSource, limits: { wallMsPerRequest: 30_000 }, actors: { STREAMERS: 'streamers', SLOW: 'patient-streamers' } },
      { name: 'holder', host: 'holder.test', source: holderSource, limits: { wallMsPerRequest: HOLDER_WALL_MS }, actors: { STREAMERS: 'streamers' } },
    ],
    actors: [{ name: 'streamers', className: 'Streamer', worker: 'actors' }, { name: 'patient-streamers', className: 'Streamer', worker: 'patient' }],
  };
}
