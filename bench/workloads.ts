// The worker scripts both peers run (byte-identical sources), their request bodies and the
// exact responses the bench checks for.

export const HELLO_SOURCE = `export default { async fetch(request, env, ctx) { return new Response("hello") } }\n`;
export const HELLO_BODY = 'hello';

/** The JSON transform, as JS text: inlined into the worker and evaluated here for the expected body. */
export const TRANSFORM_JS = `function transform(order) {
  let total = 0;
  const lines = [];
  for (const it of order.items) {
    const amount = Math.round(it.qty * it.price * 100) / 100;
    total += amount;
    lines.push({ sku: it.sku.toUpperCase(), qty: it.qty, amount });
  }
  return {
    id: order.id,
    customer: order.customer.name.toUpperCase(),
    country: order.customer.address.country,
    count: lines.length,
    total: Math.round(total * 100) / 100,
    lines,
    tags: order.tags.slice().sort(),
  };
}`;

export const JSON_SOURCE = `${TRANSFORM_JS}
export default {
  async fetch(request, env, ctx) {
    if (request.method !== "POST") return new Response("POST a JSON order", { status: 405 });
    const order = await request.json();
    return new Response(JSON.stringify(transform(order)), { headers: { "content-type": "application/json" } });
  }
}
`;

function makeOrder(): unknown {
  const items = [];
  for (let i = 0; i < 11; i++) {
    items.push({ sku: `sku-${1000 + i * 37}-x`, name: `item number ${i}`, qty: (i % 4) + 1, price: Math.round((3.5 + i * 1.25) * 100) / 100 });
  }
  return {
    id: 'ord_7f3a9c2e4b1d',
    createdAt: '2025-01-01T12:00:00.000Z',
    customer: { id: 'cus_42', name: 'Ada Lovelace', email: 'ada@example.com', address: { street: '12 Analytical Row', city: 'London', zip: 'N1 9GU', country: 'GB' } },
    items,
    tags: ['priority', 'gift', 'eu', 'returning'],
    note: 'leave at the door',
  };
}

/** About 1 KB of JSON (checked in the bench output). */
export const JSON_REQUEST = JSON.stringify(makeOrder());

function expectedJsonReply(): string {
  const transform = new Function(`${TRANSFORM_JS}; return transform;`)() as (order: unknown) => unknown;
  return JSON.stringify(transform(JSON.parse(JSON_REQUEST) as unknown));
}
export const JSON_REPLY = expectedJsonReply();

/** A distinct script per worker, so nothing can be shared or cached between them by content. */
export function namedSource(name: string): string {
  return `export default { async fetch(request, env, ctx) { return new Response(${JSON.stringify(`hello from ${name}`)}) } }\n`;
}
export function namedBody(name: string): string { return `hello from ${name}`; }

/** A 1 KB module a Worker Loader runs (bench's dynamic phase). */
export const DYNAMIC_MODULE = `export default { fetch() { return new Response(${JSON.stringify('d'.repeat(960))}.slice(0, 7)); } };`;
export const DYNAMIC_BODY = 'ddddddd';

/**
 * The Worker Loader's caller (bench's dynamic phase, bench/dynamic-probe.ts). /noop answers
 * at once (the HTTP baseline); /load runs DYNAMIC_MODULE in a fresh dynamic worker, /get
 * (or /get?id=) calls the warm one by id, /svc calls the same module deployed (service
 * binding PLAIN), each answering with its response and, in x-parent-ms, the caller's own
 * time from the load()/get()/fetch() call to the response's body read. The isolate's
 * clock ticks in whole milliseconds (performance.now is Date.now's, as on Workers), so
 * /calls?n= times n warm get() calls and n deployed-worker calls, interleaved, in one
 * request, and answers the totals as JSON: per-call figures below the clock's tick.
 */
export const LOADER_SOURCE = `
const code = { compatibilityDate: '2025-06-01', mainModule: 'm.js', modules: { 'm.js': ${JSON.stringify(DYNAMIC_MODULE)} } };
const getCode = async () => code;
const read = async (r) => { const body = await r.text(); if (body !== ${JSON.stringify(DYNAMIC_BODY)}) throw new Error('unexpected body ' + body); return body; };
const viaGet = (env, id) => env.LOADER.get(id, getCode).getEntrypoint().fetch('http://dynamic/');
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === '/noop') return new Response(${JSON.stringify(DYNAMIC_BODY)});
    if (url.pathname === '/calls') {
      const n = Number(url.searchParams.get('n'));
      let get = 0, svc = 0;
      for (let i = 0; i < n; i++) {
        let t = performance.now();
        await read(await viaGet(env, 'warm'));
        get += performance.now() - t;
        t = performance.now();
        await read(await env.PLAIN.fetch('http://plain/'));
        svc += performance.now() - t;
      }
      return Response.json({ n, getMs: get / n, svcMs: svc / n });
    }
    const t0 = performance.now();
    const r = url.pathname === '/svc' ? await env.PLAIN.fetch('http://plain/')
      : url.pathname === '/load' ? await env.LOADER.load(code).getEntrypoint().fetch('http://dynamic/')
        : await viaGet(env, url.search ? url.searchParams.get('id') : 'warm');
    const body = await read(r);
    return new Response(body, { headers: { 'x-parent-ms': String(performance.now() - t0) } });
  },
};`;
