// A worker written against @cloudflare/workers-types the way Workers' docs write one, with
// no edge-isolates code in it: `tsc -p test/types` compiles it, and
// test/unit/workers-types.test.ts bundles it as `edge deploy` does and runs it.
interface Env {
  COUNTERS: DurableObjectNamespace;
  AI: Ai;
  GREETING: string;
}

export class Counter implements DurableObject {
  constructor(private readonly state: DurableObjectState, private readonly env: Env) {
    state.blockConcurrencyWhile(async () => {
      await state.storage.get<number>('value');
    });
  }

  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    if (request.method === 'DELETE') {
      await this.state.storage.deleteAll();
      return Response.json({ value: 0 });
    }
    const value = await this.state.storage.transaction(async (txn) => {
      const next = ((await txn.get<number>('value')) ?? 0) + 1;
      await txn.put('value', next);
      await txn.put({ [`at:${next}`]: url.searchParams.get('note') ?? '' });
      return next;
    });
    const notes = await this.state.storage.list<string>({ prefix: 'at:', limit: 100 });
    if ((await this.state.storage.getAlarm()) === null) await this.state.storage.setAlarm(Date.now() + 60_000);
    this.state.waitUntil(this.state.storage.sync());
    return Response.json({ id: this.state.id.toString(), name: this.state.id.name ?? null, value, notes: notes.size, greeting: this.env.GREETING });
  }

  async alarm(): Promise<void> {
    await this.state.storage.delete(['value']);
  }
}

export default {
  async fetch(request, env, ctx): Promise<Response> {
    const url = new URL(request.url);
    const name = url.pathname.slice(1) || 'default';
    if (url.pathname === '/ai') {
      const answer = await env.AI.run('@cf/meta/llama-3.1-8b-instruct', { messages: [{ role: 'user', content: 'hi' }] });
      return Response.json(answer);
    }
    if (url.pathname === '/stream') {
      const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
      const writer = writable.getWriter();
      ctx.waitUntil((async () => {
        await writer.write(new TextEncoder().encode(`${crypto.randomUUID().length} `));
        const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(env.GREETING));
        await writer.write(new TextEncoder().encode(`${new Uint8Array(digest).length}`));
        await writer.close();
      })());
      return new Response(readable, { headers: new Headers({ 'content-type': 'text/plain' }) });
    }
    const signal = AbortSignal.timeout(10_000);
    const id = env.COUNTERS.idFromName(name);
    const stub = env.COUNTERS.get(id);
    const res = await stub.fetch(new Request(`https://counter/${name}?note=${encodeURIComponent(request.headers.get('x-note') ?? '')}`, { method: request.method, signal }));
    const body = await res.json<{ value: number }>();
    const form = new FormData();
    form.append('value', String(body.value));
    return new Response(JSON.stringify({ ...body, sameId: stub.id.equals(id), form: form.get('value') }), { headers: { 'content-type': 'application/json' } });
  },
} satisfies ExportedHandler<Env>;
