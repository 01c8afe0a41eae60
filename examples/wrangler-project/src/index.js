import { DurableObject } from 'cloudflare:workers';
import hello from './hello.html';
import addModule from './add.wasm';
import about from './about.json';

// A counter per name in a SQLite-backed Durable Object (new_sqlite_classes).
export class Counter extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.storage.sql.exec('CREATE TABLE IF NOT EXISTS hits (n INTEGER NOT NULL)');
  }
  increment() {
    this.ctx.storage.sql.exec('INSERT INTO hits (n) VALUES (1)');
    return this.ctx.storage.sql.exec('SELECT count(*) AS n FROM hits').one().n;
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    switch (url.pathname) {
      case '/api/hello':
        return new Response(hello.replace('{{greeting}}', env.GREETING), { headers: { 'content-type': 'text/html; charset=utf-8' } });
      case '/api/add': {
        const { exports } = await WebAssembly.instantiate(addModule, {});
        return Response.json({ sum: exports.add(Number(url.searchParams.get('a')), Number(url.searchParams.get('b'))) });
      }
      case '/api/about':
        return Response.json(about);
      case '/api/count':
        return Response.json({ count: await env.COUNTERS.getByName(url.searchParams.get('name') ?? 'default').increment() });
      case '/api/secret':
        return Response.json({ hasToken: typeof env.API_TOKEN === 'string', length: env.API_TOKEN?.length ?? 0 });
      default:
        // Assets were looked up first (run_worker_first = false); the binding serves them too.
        return env.ASSETS.fetch(request);
    }
  },
};
