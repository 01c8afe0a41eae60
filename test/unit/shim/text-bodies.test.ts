import { describe, expect, it } from 'vitest';
import { evaluate, runWorker } from './run-worker.js';

// Bodies made from strings stay strings until their bytes are needed: these check the
// bytes that reach the host are still the UTF-8 the Encoding standard gives.

const hex = (chunks: Uint8Array[]) => Buffer.concat(chunks).toString('hex');

describe('text bodies', () => {
  it('sends a small text body as UTF-8, lone surrogates as U+FFFD', async () => {
    const r = await runWorker(`export default { fetch() { return new Response('h\\u00e9\\ud83d\\ude00\\ud800!') } }`);
    expect(r.bodyKind).toBe('whole');
    expect(hex(r.chunks)).toBe(Buffer.from('h\u00e9\u{1F600}\uFFFD!', 'utf8').toString('hex'));
    expect(r.headers).toContainEqual(['content-type', 'text/plain;charset=UTF-8']);
  });

  it('sends a text body over 64 KiB whole', async () => {
    const r = await runWorker(`export default { fetch() { return new Response('\\u00e9'.repeat(70000)) } }`);
    expect(r.bodyKind).toBe('whole');
    expect(Buffer.concat(r.chunks).byteLength).toBe(140000);
    expect(r.text).toBe('\u00e9'.repeat(70000));
  });

  it('reads a string body back as well-formed text and as bytes', async () => {
    expect(await evaluate(`return await new Response('a\\ud800b').text();`)).toBe('a\uFFFDb');
    expect(await evaluate(`return [...new Uint8Array(await new Response('\\u00e9').arrayBuffer())];`)).toEqual([0xc3, 0xa9]);
    expect(await evaluate(`const r = new Response('{"a":[1,2]}'); const c = r.clone(); return [await r.json(), await c.text()];`)).toEqual([{ a: [1, 2] }, '{"a":[1,2]}']);
    expect(await evaluate(`const r = new Response('x'); await r.text(); try { await r.text(); return 'read twice'; } catch (e) { return e.name; }`)).toBe('TypeError');
  });

  it('streams a string body when its body stream is read', async () => {
    expect(await evaluate(`const r = Response.json({ k: 'v' }); const chunks = []; for await (const c of r.body) chunks.push(...c); return new TextDecoder().decode(new Uint8Array(chunks));`)).toBe('{"k":"v"}');
  });
});
