import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestAgent, type TestAgent } from './agent-harness.js';

// HTMLRewriter (issue 15, item 3) in real isolates behind the real HTTP front: lol-html
// (html-rewriter-wasm) runs inside each worker's own isolate, its wasm memory counted
// against that worker's memoryMiB (node-agent/shim/html-rewriter.js).

// Cloudflare's published "Rewrite links" example
// (https://developers.cloudflare.com/workers/examples/rewrite-links), unmodified.
const REWRITE_LINKS = `
export default {
  async fetch(request) {
    const OLD_URL = "developer.mozilla.org";
    const NEW_URL = "mynewdomain.com";

    class AttributeRewriter {
      constructor(attributeName) {
        this.attributeName = attributeName;
      }
      element(element) {
        const attribute = element.getAttribute(this.attributeName);
        if (attribute) {
          element.setAttribute(
            this.attributeName,
            attribute.replace(OLD_URL, NEW_URL),
          );
        }
      }
    }

    const rewriter = new HTMLRewriter()
      .on("a", new AttributeRewriter("href"))
      .on("img", new AttributeRewriter("src"));

    const res = await fetch(request);
    const contentType = res.headers.get("Content-Type");

    // If the response is HTML, it can be transformed with
    // HTMLRewriter -- otherwise, it should pass through
    if (contentType.startsWith("text/html")) {
      return rewriter.transform(res);
    } else {
      return res;
    }
  },
};`;

// The API surface, async handlers, a handler that throws (sync and async) and one that spins.
const API = `let requests = 0;
export default {
  async fetch(request) {
    requests++;
    const url = new URL(request.url);
    if (url.pathname === '/selectors') {
      const out = {};
      for (const sel of ['div[', '', 'p:nth-child(2n+1)', 'a:hover', 'a > b', '!!']) {
        try { new HTMLRewriter().on(sel, {}); out[sel] = 'ok'; } catch (e) { out[sel] = e.constructor.name + ': ' + e.message; }
      }
      return Response.json(out);
    }
    if (url.pathname === '/count') return new Response(String(requests));
    if (url.pathname === '/throws') {
      return new HTMLRewriter()
        .on('b', { element() { throw new Error('handler exploded'); } })
        .transform(new Response('<p>before</p>' + 'x'.repeat(1000) + '<b>boom</b><p>after</p>'));
    }
    if (url.pathname === '/throws-async') {
      return new HTMLRewriter()
        .on('b', { async element() { await scheduler.wait(1); throw new Error('async handler exploded'); } })
        .transform(new Response('<p>before</p><b>boom</b><p>after</p>'));
    }
    if (url.pathname === '/late-throw') {
      return new HTMLRewriter()
        .on('b', { async element() { await scheduler.wait(600); throw new Error('late handler failure'); } })
        .transform(new Response('<b>boom</b>'));
    }
    if (url.pathname === '/spin') {
      return new HTMLRewriter()
        .on('b', { element() { for (;;) {} } })
        .transform(new Response('<p>before</p><b>boom</b><p>after</p>'));
    }
    if (url.pathname === '/streamed') {
      const bytes = (s) => new TextEncoder().encode(s);
      return new HTMLRewriter()
        .on('div', { element(el) {
          el.before(new Response('<i>from a response</i>'), { html: true });
          el.append(new ReadableStream({ start(c) { c.enqueue(bytes('<b>a</b>')); c.enqueue(bytes('<b>b</b>')); c.close(); } }), { html: true });
          el.append(' & text');
          el.onEndTag((end) => { end.after(new Response('<u>end</u>'), { html: true }); });
        } })
        .on('p', { async text(t) { if (t.text) { await scheduler.wait(1); t.replace(new Response('escaped <tag>')); } } })
        .transform(new Response('<div>x</div><p>y</p>'));
    }
    if (url.pathname === '/concurrent') {
      // Two rewriters at once in one request, both suspended in async handlers in turn.
      const one = (tag, ms) => new HTMLRewriter()
        .on(tag, { async element(el) { await scheduler.wait(ms); el.setAttribute('data-done', tag); } })
        .transform(new Response(('<' + tag + '>x</' + tag + '>').repeat(5))).text();
      const [a, b] = await Promise.all([one('p', 3), one('i', 1)]);
      return new Response(a + '|' + b);
    }
    if (url.pathname === '/async-wait') {
      return new HTMLRewriter()
        .on('p', { async element(el) { await scheduler.wait(20); el.setAttribute('data-waited', 'yes'); el.onEndTag(async (end) => { await scheduler.wait(1); end.after('!'); }); } })
        .on('i', { async text(t) { await scheduler.wait(1); if (t.text) t.replace(t.text + '?'); } })
        .transform(new Response('<p>a</p><p>b</p><i>q</i>'));
    }
    if (url.pathname === '/async') {
      return new HTMLRewriter()
        .on('h1', { async element(el) { const r = await fetch(url.searchParams.get('upstream') + '/title'); el.setInnerContent(await r.text()); } })
        .on('p', { async element(el) { await scheduler.wait(20); el.setAttribute('data-waited', 'yes'); } })
        .transform(new Response('<h1>old</h1><p>a</p><p>b</p>'));
    }
    const seen = [];
    const page = '<!DOCTYPE html><html lang="en"><head><title>Old</title></head><body><!-- note --><div id="a" class="x" data-k="v">keep <b>bold</b></div><br><img src="i.png"/><span>drop me</span><em>unwrap</em><p>one two</p><svg><circle r="1"/></svg><section>inner</section><old-tag>t</old-tag></body></html>';
    const res = new HTMLRewriter()
      .on('div#a', { element(el) {
        seen.push({ tag: el.tagName, attrs: [...el.attributes], has: el.hasAttribute('data-k'), missing: el.getAttribute('nope'), ns: el.namespaceURI, can: el.canHaveContent, removed: el.removed });
        el.setAttribute('data-new', '1'); el.removeAttribute('class');
        el.prepend('<i>pre</i>', { html: true }); el.append('<tail>'); el.before('B4 '); el.after(' AFT');
        el.onEndTag((end) => { seen.push({ end: end.name }); end.before('<!--end-of-div-->', { html: true }); });
      } })
      .on('br', { element(el) { seen.push({ br: el.canHaveContent }); } })
      .on('span', { element(el) { el.remove(); } })
      .on('em', { element(el) { el.removeAndKeepContent(); } })
      .on('section', { element(el) { el.setInnerContent('<u>new</u>', { html: true }); } })
      .on('old-tag', { element(el) { el.tagName = 'new-tag'; } })
      .on('circle', { element(el) { seen.push({ svg: el.namespaceURI }); } })
      .on('title', { element(el) { el.replace('<title>New</title>', { html: true }); } })
      .on('p', { text(t) { seen.push({ text: t.text, last: t.lastInTextNode }); if (t.text) t.replace(t.text.toUpperCase()); } })
      .onDocument({
        doctype(d) { seen.push({ doctype: d.name, pub: d.publicId, sys: d.systemId }); },
        comments(c) { seen.push({ comment: c.text }); c.text = ' rewritten '; },
        end(e) { e.append('<!-- done -->', { html: true }); },
      })
      .transform(new Response(page, { status: 201, headers: { 'content-type': 'text/html', 'x-up': 'kept', 'content-length': String(page.length) } }));
    const html = await res.text();
    return Response.json({ status: res.status, type: res.headers.get('content-type'), up: res.headers.get('x-up'), len: res.headers.get('content-length'), html, seen });
  },
};
`;

// A worker that streams \`mib\` MiB of HTML it generates chunk by chunk (its own heap never
// holds the document) through HTMLRewriter; \`kind\` picks the document: links (a link per
// 64 KiB chunk, the first one marked with how many chunks the source had given by then),
// dense (nothing but links), nested (13,000 <div>s a chunk, none closed), attr (one start tag whose attribute is the whole document).
const GENERATED = `
const CHUNK = 64 * 1024;
function source(kind, mib, counter) {
  const total = mib * 1024 * 1024;
  let sent = 0;
  const enc = new TextEncoder();
  const filler = 'x'.repeat(CHUNK - 200);
  return new ReadableStream({
    pull(c) {
      if (sent >= total) { c.enqueue(enc.encode(kind === 'attr' ? '">end</div>' : '</body></html>')); c.close(); return; }
      counter.pulled++;
      let s;
      if (kind === 'attr') s = sent === 0 ? '<div data-x="' + filler : filler;
      else if (kind === 'dense') s = '<a href="http://old.example/x">l</a>'.repeat(1820);
      else if (kind === 'nested') s = '<div>'.repeat(13000);
      else s = (sent === 0 ? '<html><body>' : '') + '<a href="http://old.example/' + counter.pulled + '">l</a><p>' + filler + '</p>';
      sent += s.length;
      c.enqueue(enc.encode(s));
    },
  }, { highWaterMark: 0 });
}
export default {
  async fetch(request) {
    const url = new URL(request.url);
    const kind = url.searchParams.get('kind') ?? 'links';
    const mib = Number(url.searchParams.get('mib') ?? '1');
    const counter = { pulled: 0 };
    let first = true;
    let divs = 0;
    return new HTMLRewriter()
      .on('a', { element(el) {
        el.setAttribute('href', el.getAttribute('href').replace('http://old.example', 'https://new.example'));
        if (first) { first = false; el.setAttribute('data-pulled', String(counter.pulled)); }
      } })
      .on('div', { element() { divs++; } })
      .onDocument({ end(end) { end.append('<!-- divs: ' + divs + ' -->', { html: true }); } })
      .transform(new Response(source(kind, mib, counter), { headers: { 'content-type': 'text/html' } }));
  },
};`;

const NEIGHBOUR = `export default { fetch() { return new Response('neighbour ok'); } };`;

/** What a raw HTTP client saw: the status (0: no response head), how much body, the body's start, whether it ended cleanly. */
interface RawOutcome { status: number; length: number; text: string; ended: boolean; error: string | undefined }

function rawGet(port: number, host: string, path: string, keep = 1 << 20): Promise<RawOutcome> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers: { host } }, (res) => {
      let length = 0;
      let text = '';
      let ended = false;
      res.setEncoding('latin1');
      res.on('data', (c: string) => { length += c.length; if (text.length < keep) text += c; });
      res.on('end', () => { ended = true; });
      const done = (error: string | undefined) => resolve({ status: res.statusCode ?? 0, length, text, ended, error });
      res.on('error', (err) => done(err.message));
      res.on('close', () => done(undefined));
    });
    req.on('error', (err) => resolve({ status: 0, length: 0, text: '', ended: false, error: err.message }));
    req.end();
  });
}

const UPSTREAM_PAGE = '<html><body><a href="https://developer.mozilla.org/en-US/docs/Web">MDN</a><img src="https://developer.mozilla.org/logo.png"><a name="x">no href</a></body></html>';
const upstream: Server = createServer((req, res) => {
  if (req.url === '/data.json') { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"href":"https://developer.mozilla.org/"}'); return; }
  if (req.url === '/title') { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('fetched title'); return; }
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': String(Buffer.byteLength(UPSTREAM_PAGE)) });
  res.end(UPSTREAM_PAGE);
});

describe('HTMLRewriter', () => {
  let a: TestAgent;
  let upstreamPort = 0;
  const neighbour = async () => { const r = await rawGet(a.port, 'neighbour.test', '/'); return `${r.status} ${r.text}`; };
  const count = async () => Number((await rawGet(a.port, 'api.test', '/count')).text);

  beforeAll(async () => {
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    upstreamPort = (upstream.address() as AddressInfo).port;
    a = await startTestAgent([
      { name: 'links', source: REWRITE_LINKS },
      { name: 'api', source: API, limits: { cpuMsPerRequest: 200 } },
      { name: 'gen', source: GENERATED, limits: { cpuMsPerRequest: 30_000, memoryMiB: 32, wallMsPerRequest: 120_000 } },
      { name: 'gen16', source: GENERATED, limits: { cpuMsPerRequest: 30_000, memoryMiB: 16, wallMsPerRequest: 120_000 } },
      { name: 'neighbour', source: NEIGHBOUR },
    ], {
      egressAllow: [`127.0.0.1:${upstreamPort}`],
      resolve: async (hostname) => {
        if (hostname === 'links.test') return [{ address: '127.0.0.1', family: 4 }];
        throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' });
      },
    });
  });
  afterAll(async () => {
    await a?.stop();
    upstream.close();
  });

  it("runs Cloudflare's published rewrite-links example unmodified: links and images rewritten, other types passed through", async () => {
    // The example fetches the request itself: links.test:<port> is the upstream origin.
    const page = await rawGet(a.port, `links.test:${upstreamPort}`, '/');
    expect(page.status).toBe(200);
    expect(page.ended).toBe(true);
    expect(page.text).toBe('<html><body><a href="https://mynewdomain.com/en-US/docs/Web">MDN</a><img src="https://mynewdomain.com/logo.png"><a name="x">no href</a></body></html>');
    const json = await rawGet(a.port, `links.test:${upstreamPort}`, '/data.json');
    expect(json.text).toBe('{"href":"https://developer.mozilla.org/"}');
  });

  it('has the Element, EndTag, Text, Comment, Doctype and DocumentEnd API, keeps status and headers and drops Content-Length', async () => {
    const out = JSON.parse((await rawGet(a.port, 'api.test', '/')).text) as { status: number; type: string; up: string; len: string | null; html: string; seen: unknown[] };
    expect(out).toMatchObject({ status: 201, type: 'text/html', up: 'kept', len: null });
    expect(out.html).toBe('<!DOCTYPE html><html lang="en"><head><title>New</title></head><body><!-- rewritten -->B4 <div id="a" data-k="v" data-new="1"><i>pre</i>keep <b>bold</b>&lt;tail&gt;<!--end-of-div--></div> AFT<br><img src="i.png"/>unwrap<p>ONE TWO</p><svg><circle r="1"/></svg><section><u>new</u></section><new-tag>t</new-tag></body></html><!-- done -->');
    expect(out.seen).toEqual([
      { doctype: 'html', pub: null, sys: null },
      { comment: ' note ' },
      { tag: 'div', attrs: [['id', 'a'], ['class', 'x'], ['data-k', 'v']], has: true, missing: null, ns: 'http://www.w3.org/1999/xhtml', can: true, removed: false },
      { end: 'div' },
      { br: false },
      { text: 'one two', last: false },
      { text: '', last: true },
      { svg: 'http://www.w3.org/2000/svg' },
    ]);
  });

  it('inserts streamed content (a Response, a ReadableStream) in order with the string calls after it, as text unless { html: true }', async () => {
    const r = await rawGet(a.port, 'api.test', '/streamed');
    expect(r.text).toBe('<i>from a response</i><div>x<b>a</b><b>b</b> &amp; text</div><u>end</u><p>escaped &lt;tag&gt;</p>');
  });

  it('refuses a bad selector with a TypeError at .on(), as workerd does', async () => {
    const out = JSON.parse((await rawGet(a.port, 'api.test', '/selectors')).text) as Record<string, string>;
    expect(out).toEqual({
      'div[': 'TypeError: Parser error: Unexpected end of selector.',
      '': 'TypeError: Parser error: The selector is empty.',
      'p:nth-child(2n+1)': 'ok',
      'a:hover': 'TypeError: Parser error: Unsupported pseudo-class or pseudo-element in selector.',
      'a > b': 'ok',
      '!!': 'TypeError: Parser error: The selector is empty.',
    });
  });

  it('waits for async handlers: an element handler awaiting fetch(), others awaiting scheduler.wait, an async end tag and text handler, two rewriters suspended in turn', async () => {
    const fetched = await rawGet(a.port, 'api.test', `/async?upstream=${encodeURIComponent(`http://127.0.0.1:${upstreamPort}`)}`);
    expect(fetched.text).toBe('<h1>fetched title</h1><p data-waited="yes">a</p><p data-waited="yes">b</p>');
    const both = await rawGet(a.port, 'api.test', '/concurrent');
    expect(both.text).toBe(`${'<p data-done="p">x</p>'.repeat(5)}|${'<i data-done="i">x</i>'.repeat(5)}`);
    for (let i = 0; i < 2; i++) {
      const waited = await rawGet(a.port, 'api.test', '/async-wait');
      expect(waited.text).toBe('<p data-waited="yes">a</p>!<p data-waited="yes">b</p>!<i>q?</i>');
    }
  });

  it('streams: 50 MiB through a 32 MiB worker with a synchronous handler, the first link handled after the first source chunk', async () => {
    const r = await rawGet(a.port, 'gen.test', '/?kind=links&mib=50', 4096);
    expect(r.status).toBe(200);
    expect(r.ended).toBe(true);
    expect(r.length).toBeGreaterThan(50 * 1024 * 1024);
    // The handler saw the first <a> when the source had given one chunk of 800: nothing
    // read the document ahead of the rewriter.
    expect(r.text).toMatch(/^<html><body><a href="https:\/\/new\.example\/1" data-pulled="1">l<\/a><p>x/);
  });

  it('keeps lol-html\'s memory flat: 8 MiB of nothing but links (233,000 handled elements) in a worker whose rewriter may use 8 MiB', async () => {
    // html-rewriter-wasm never frees what it hands a handler (about 40 bytes an element);
    // unfreed, this document would pass the cap and trap.
    const r = await rawGet(a.port, 'gen16.test', '/?kind=dense&mib=8', 4096);
    expect(r.status).toBe(200);
    expect(r.ended).toBe(true);
    expect(r.length).toBeGreaterThan(8 * 1024 * 1024);
    expect(r.text.startsWith('<a href="https://new.example/x" data-pulled="1">l</a><a href="https://new.example/x">l</a>')).toBe(true);
  });

  it('rewrites deeply nested HTML (13,000 levels)', async () => {
    const r = await rawGet(a.port, 'gen.test', '/?kind=nested&mib=0.06');
    expect(r.status).toBe(200);
    expect(r.ended).toBe(true);
    expect(r.text.endsWith('</body></html><!-- divs: 13000 -->')).toBe(true);
  });

  it('a document lol-html must hold whole (a 50 MiB start tag) stops that worker only; its neighbours keep serving, and it serves again', async () => {
    const before = a.logs.length;
    const [bomb, next] = await Promise.all([
      rawGet(a.port, 'gen.test', '/?kind=attr&mib=50'),
      (async () => { await new Promise((r) => setTimeout(r, 50)); return neighbour(); })(),
    ]);
    expect(bomb.ended && bomb.status === 200).toBe(false);
    expect(next).toBe('200 neighbour ok');
    const logs = a.logs.slice(before);
    expect(logs.some((l) => l.msg === 'isolate disposed' && l.worker === 'default/gen' && l.reason === 'memory')).toBe(true);
    expect(logs.some((l) => String(l.msg).includes('HTMLRewriter: its wasm instance trapped (memory limit)'))).toBe(true);
    expect(await neighbour()).toBe('200 neighbour ok');
    const again = await rawGet(a.port, 'gen.test', '/?kind=links&mib=1', 4096);
    expect(again.ended).toBe(true);
    expect(again.text).toContain('https://new.example/1');
  });

  it('a handler that throws (sync or async) fails that response; the isolate lives on', async () => {
    const start = await count();
    const sync = await rawGet(a.port, 'api.test', '/throws');
    expect(sync.ended && sync.status === 200).toBe(false);
    const asyncThrow = await rawGet(a.port, 'api.test', '/throws-async');
    expect(asyncThrow.ended && asyncThrow.status === 200).toBe(false);
    // The same isolate counted every request: it was not replaced.
    expect(await count()).toBe(start + 3);
    const errors = a.logs.filter((l) => l.msg === 'worker threw an exception').map((l) => String(l.error));
    expect(errors.some((e) => e.includes('Error: handler exploded'))).toBe(true);
    expect(errors.some((e) => e.includes('Error: async handler exploded'))).toBe(true);
    const page = await rawGet(a.port, 'api.test', '/async-wait');
    expect(page.text).toBe('<p data-waited="yes">a</p>!<p data-waited="yes">b</p>!<i>q?</i>');
  });

  it('a handler that fails after the head went out alone (250 ms without a byte): the client gets the head and a cut-off body', async () => {
    const r = await rawGet(a.port, 'api.test', '/late-throw');
    expect(r.status).toBe(200);
    expect(r.ended).toBe(false);
    expect(a.logs.some((l) => String(l.error ?? '').includes('late handler failure'))).toBe(true);
  });

  it('a handler that spins is stopped by the CPU limit; the neighbours keep serving', async () => {
    const before = a.logs.length;
    const spin = await rawGet(a.port, 'api.test', '/spin');
    expect(spin.ended && spin.status === 200).toBe(false);
    expect(a.logs.slice(before).some((l) => l.msg === 'isolate disposed' && l.worker === 'default/api' && l.reason === 'cpu')).toBe(true);
    expect(await neighbour()).toBe('200 neighbour ok');
    const page = await rawGet(a.port, 'api.test', '/async-wait');
    expect(page.text).toBe('<p data-waited="yes">a</p>!<p data-waited="yes">b</p>!<i>q?</i>');
  });
});
