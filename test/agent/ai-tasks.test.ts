import { crc32, inflateSync } from 'node:zlib';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ANY_MODEL, STAND_IN_HEADER, startOpenAiServer, type OpenAiServer } from '../../cli/local/model-stub.js';
import type { WorkerEnv } from '../../node-agent/abi/bridge.js';
import { evaluate, runWorker, WorkerThrew, type LoadOptions } from '../unit/shim/run-worker.js';

// env.AI.run(model, inputs) for every task type of the catalogue, in real isolates, against
// the stand-in model servers `edge dev` runs (cli/local/model-stub.ts) over real HTTP: one
// binding that may call a text-generation, two embedding and an image model, each at its own
// server, as the agent's env has them once the catalogue is resolved.

const LLM = '@cf/meta/llama-3.1-8b-instruct';
const BGE_BASE = '@cf/baai/bge-base-en-v1.5';
const BGE_SMALL = '@cf/baai/bge-small-en-v1.5';
const BGE_LARGE = '@hf/baai/bge-large-en-v1.5';
const SDXL = '@cf/stabilityai/stable-diffusion-xl-base-1.0';

let llm: OpenAiServer;
let embed: OpenAiServer;
let image: OpenAiServer;

beforeAll(async () => {
  [llm, embed, image] = await Promise.all([
    startOpenAiServer({ model: LLM, label: 'llm' }),
    startOpenAiServer({ model: ANY_MODEL, label: 'embed' }),
    startOpenAiServer({ model: SDXL, label: 'image' }),
  ]);
});
afterAll(async () => {
  await Promise.all([llm.close(), embed.close(), image.close()]);
});
beforeEach(() => {
  for (const s of [llm, embed, image]) {
    s.failure = null;
    s.requests.length = 0;
  }
});

const env = (): NonNullable<WorkerEnv['ai']> => ({
  AI: {
    model: LLM, url: llm.url, task: 'text-generation',
    models: {
      [BGE_BASE]: { url: embed.url, task: 'text-embeddings' },
      [BGE_SMALL]: { url: embed.url, task: 'text-embeddings' },
      [BGE_LARGE]: { url: embed.url, task: 'text-embeddings' },
      [SDXL]: { url: image.url, task: 'text-to-image' },
    },
  },
});
const opts = (): LoadOptions => ({ ai: env() });
const run = <T = unknown>(body: string) => evaluate<T>(body, {}, opts());

async function thrown(body: string): Promise<string> {
  try {
    const value = await run(body);
    throw new Error(`expected the worker code to throw, but it returned ${JSON.stringify(value)}`);
  } catch (err) {
    if (err instanceof WorkerThrew) return err.thrown.message;
    throw err;
  }
}

interface Png { width: number; height: number; colourType: number; text: string[]; pixels: Buffer }

/** Decodes a PNG as a viewer would: signature, every chunk's CRC, IHDR, inflated IDAT rows. */
function decodePng(bytes: Buffer): Png {
  expect([...bytes.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  let at = 8;
  let ihdr: Buffer | undefined;
  const idat: Buffer[] = [];
  const text: string[] = [];
  let ended = false;
  while (at < bytes.length) {
    const len = bytes.readUInt32BE(at);
    const type = bytes.subarray(at + 4, at + 8).toString('latin1');
    const data = bytes.subarray(at + 8, at + 8 + len);
    expect(bytes.readUInt32BE(at + 8 + len), `CRC of ${type}`).toBe(crc32(bytes.subarray(at + 4, at + 8 + len)));
    if (type === 'IHDR') ihdr = data;
    else if (type === 'IDAT') idat.push(data);
    else if (type === 'tEXt') text.push(data.toString('latin1'));
    else if (type === 'IEND') ended = true;
    at += 12 + len;
  }
  expect(ended).toBe(true);
  expect(ihdr).toBeDefined();
  const width = ihdr!.readUInt32BE(0);
  const height = ihdr!.readUInt32BE(4);
  expect(ihdr![8]).toBe(8);
  const pixels = inflateSync(Buffer.concat(idat));
  expect(pixels.length).toBe(height * (1 + width * 3));
  return { width, height, colourType: ihdr![9]!, text, pixels };
}

describe('env.AI.run: text embeddings', () => {
  it('{ text: string } resolves { shape: [1, 768], data } for bge-base through /v1/embeddings', async () => {
    const out = await run<{ shape: number[]; data: number[][] }>(`return env.AI.run('${BGE_BASE}', { text: 'hello world' });`);
    expect(out.shape).toEqual([1, 768]);
    expect(out.data).toHaveLength(1);
    expect(out.data[0]).toHaveLength(768);
    expect(Math.hypot(...out.data[0]!)).toBeCloseTo(1, 6);
    expect(embed.requests).toHaveLength(1);
    expect(embed.requests[0]).toMatchObject({ path: '/v1/embeddings', body: { model: BGE_BASE, input: ['hello world'], encoding_format: 'float' } });
    expect(llm.requests).toEqual([]);
  });

  it('{ text: string[] } keeps the order; the dimension is the model\'s (bge-small 384, bge-large 1024); equal texts, equal vectors', async () => {
    const out = await run<Array<{ shape: number[]; data: number[][] }>>(`return [
      await env.AI.run('${BGE_SMALL}', { text: ['a', 'b', 'a'] }),
      await env.AI.run('${BGE_LARGE}', { text: ['a'] }),
    ];`);
    expect(out[0]!.shape).toEqual([3, 384]);
    expect(out[0]!.data[0]).toEqual(out[0]!.data[2]);
    expect(out[0]!.data[0]).not.toEqual(out[0]!.data[1]);
    expect(out[1]!.shape).toEqual([1, 1024]);
  });

  it('inputs of the wrong shape are refused in Workers AI\'s terms (5006) before anything is sent', async () => {
    const msgs = await run<string[]>(`const out = [];
      for (const inputs of [{ prompt: 'x' }, { text: 42 }, { text: [] }, { text: Array(101).fill('x') }, { text: 'x', extra: 1 }]) {
        try { await env.AI.run('${BGE_BASE}', inputs); out.push('resolved'); } catch (e) { out.push(e.message); }
      }
      return out;`);
    for (const m of msgs) expect(m).toMatch(/^env\.AI\.run\(\): 5006: invalid inputs for text-embeddings model @cf\/baai\/bge-base-en-v1\.5: /);
    expect(msgs[0]).toMatch(/text/);
    expect(embed.requests).toEqual([]);
  });

  it('a server answering the wrong count of vectors, or an error naming its address, is an error that never names the address', async () => {
    embed.failure = { status: 200, body: JSON.stringify({ data: [] }) };
    expect(await thrown(`return env.AI.run('${BGE_BASE}', { text: ['a', 'b'] });`)).toMatch(/^env\.AI\.run\(\): the model server answered with an unexpected shape/);
    embed.failure = { status: 503, body: JSON.stringify({ error: { message: `overloaded at ${embed.url}` } }) };
    const msg = await thrown(`return env.AI.run('${BGE_BASE}', { text: 'a' });`);
    expect(msg).toBe('env.AI.run(): the model server answered 503: overloaded at <model server>');
    expect(msg).not.toContain(String(embed.port));
  });
});

describe('env.AI.run: text to image', () => {
  const IMAGE_WORKER = `export default { async fetch(request, env) {
    const url = new URL(request.url);
    const out = await env.AI.run('${SDXL}', { prompt: url.searchParams.get('p'), width: 96, height: 64, num_steps: 4, seed: 3 });
    if (!(out instanceof ReadableStream)) return new Response('not a ReadableStream: ' + Object.prototype.toString.call(out), { status: 500 });
    return new Response(out, { headers: { 'content-type': 'image/png' } });
  } }`;

  it('{ prompt } resolves a ReadableStream of a real PNG of the asked size, labelled as a stand-in', async () => {
    const reply = await runWorker(IMAGE_WORKER, { url: 'http://x/?p=a%20cat' }, opts());
    expect(reply.status).toBe(200);
    const png = decodePng(Buffer.concat(reply.chunks));
    expect([png.width, png.height, png.colourType]).toEqual([96, 64, 2]);
    expect(png.text.join('\n')).toMatch(/stand-in model server \(image\)/);
    expect(image.requests[0]).toMatchObject({
      path: '/v1/images/generations',
      body: { model: SDXL, prompt: 'a cat', n: 1, response_format: 'b64_json', size: '96x64', num_inference_steps: 4, seed: 3 },
    });
  });

  it('refuses inputs it cannot honour (image, mask, a side over 4096, no prompt) naming the field', async () => {
    const msgs = await run<string[]>(`const out = [];
      for (const inputs of [{ prompt: 'x', image: [1, 2] }, { prompt: 'x', width: 100000 }, { text: 'x' }, { prompt: '' }]) {
        try { await env.AI.run('${SDXL}', inputs); out.push('resolved'); } catch (e) { out.push(e.message); }
      }
      return out;`);
    expect(msgs[0]).toMatch(/5006: invalid inputs for text-to-image model .*image/);
    expect(msgs[1]).toMatch(/5006: .*width/);
    expect(msgs[2]).toMatch(/5006: .*prompt/);
    expect(msgs[3]).toMatch(/5006: .*prompt/);
    expect(image.requests).toEqual([]);
  });

  it('a server answering an image over the 32 MiB limit, or none, is a bounded error', async () => {
    image.failure = { status: 200, body: JSON.stringify({ data: [{ b64_json: 'A'.repeat(33 * 1024 * 1024) }] }) };
    expect(await thrown(`return env.AI.run('${SDXL}', { prompt: 'x' });`)).toMatch(/^env\.AI\.run\(\): the model server's answer (of \d+ bytes )?is over the 33554432-byte limit/);
    image.failure = { status: 200, body: JSON.stringify({ data: [] }) };
    expect(await thrown(`return env.AI.run('${SDXL}', { prompt: 'x' });`)).toMatch(/unexpected shape/);
    image.failure = { status: 200, body: JSON.stringify({ data: [{ b64_json: '!!!!' }] }) };
    expect(await thrown(`return env.AI.run('${SDXL}', { prompt: 'x' });`)).toMatch(/an empty image/);
  });
});

describe('env.AI.run: text generation with @cf ids, tools and streaming', () => {
  it('routes a @cf model id to its server; whole and streamed answers keep their shapes', async () => {
    const out = await run<{ whole: unknown; sse: string }>(`
      const whole = await env.AI.run('${LLM}', { messages: [{ role: 'user', content: 'hi there' }], max_tokens: 16, temperature: 0.1 });
      const stream = await env.AI.run('${LLM}', { prompt: 'one two', stream: true });
      return { whole, sse: await new Response(stream).text() };`);
    expect(out.whole).toEqual({ response: '[llm] echo: hi there', usage: { prompt_tokens: 2, completion_tokens: 4, total_tokens: 6 } });
    expect(out.sse.split('\n\n').filter(Boolean)).toEqual([
      'data: {"response":"[llm] "}', 'data: {"response":"echo: "}', 'data: {"response":"one "}', 'data: {"response":"two"}',
      'data: {"response":"","usage":{"prompt_tokens":2,"completion_tokens":4,"total_tokens":6}}', 'data: [DONE]',
    ]);
    expect(llm.requests.map((r) => r.body)).toMatchObject([{ model: LLM, temperature: 0.1, max_tokens: 16 }, { model: LLM, stream: true }]);
  });

  it('tools (OpenAI and legacy shapes) become OpenAI tools; the call comes back in Workers AI\'s tool_calls shape', async () => {
    const out = await run<Array<{ response: string; tool_calls: unknown[] }>>(`
      const parameters = { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } }, required: ['city', 'days'] };
      const messages = [{ role: 'user', content: 'Lisbon' }];
      return [
        await env.AI.run('${LLM}', { messages, tools: [{ type: 'function', function: { name: 'weather', description: 'forecast', parameters } }] }),
        await env.AI.run('${LLM}', { messages, tools: [{ name: 'weather', description: 'forecast', parameters }] }),
      ];`);
    for (const o of out) {
      expect(o.tool_calls).toEqual([{
        id: expect.stringMatching(/^call-llm-/), type: 'function', function: { name: 'weather', arguments: '{"city":"Lisbon","days":1}' },
        name: 'weather', arguments: { city: 'Lisbon', days: 1 },
      }]);
    }
    for (const r of llm.requests) {
      expect(r.body).toMatchObject({ tool_choice: 'auto', tools: [{ type: 'function', function: { name: 'weather', description: 'forecast' } }] });
    }
  });

  it('a conversation continues after a tool call (tool role, tool_call_id); tools need messages and no stream', async () => {
    const out = await run<unknown>(`return env.AI.run('${LLM}', { messages: [
      { role: 'user', content: 'Lisbon' },
      { role: 'assistant', content: '', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'weather', arguments: '{}' } }] },
      { role: 'tool', content: 'sunny', tool_call_id: 'c1' },
    ], tools: [{ name: 'weather', description: 'forecast' }] });`);
    expect(out).toMatchObject({ response: '[llm] echo: Lisbon' });
    expect(await thrown(`return env.AI.run('${LLM}', { prompt: 'x', tools: [{ name: 'w', description: 'd' }] });`)).toMatch(/tools need messages/);
    expect(await thrown(`return env.AI.run('${LLM}', { messages: [{ role: 'user', content: 'x' }], stream: true, tools: [{ name: 'w', description: 'd' }] });`))
      .toMatch(/tools with stream: true are not supported/);
  });
});

describe('env.AI.run: models outside the binding', () => {
  it('a model the binding may not call is refused in Workers AI\'s wording (5007), listing what it may call, before anything is sent', async () => {
    const msg = await thrown(`return env.AI.run('@cf/openai/whisper', { audio: [1, 2, 3] });`);
    expect(msg).toBe(`env.AI.run(): 5007: No such model @cf/openai/whisper or task (env.AI may call: ${LLM}, ${BGE_BASE}, ${BGE_SMALL}, ${BGE_LARGE}, ${SDXL})`);
    // Inherited names are not models: the binding's table is looked up by own keys only.
    expect(await thrown(`return env.AI.run('__proto__', { text: 'x' });`)).toMatch(/5007: No such model __proto__/);
    expect(await thrown(`return env.AI.run('constructor', { text: 'x' });`)).toMatch(/5007: No such model constructor/);
    expect([...llm.requests, ...embed.requests, ...image.requests]).toEqual([]);
  });
});

describe('env.AI.run: a flood of calls', () => {
  it('embeddings and image calls count against limits.subrequests like text generation: the rest are refused before anything is sent', async () => {
    const out = await evaluate<string[]>(`
      const calls = [];
      for (let i = 0; i < 50; i++) calls.push(env.AI.run(i % 2 ? '${BGE_BASE}' : '${SDXL}', i % 2 ? { text: 'x' + i } : { prompt: 'x' + i }).then(() => 'ok', (e) => e.message));
      return Promise.all(calls);`, {}, { ai: env(), limits: { subrequests: 3 } });
    expect(out.filter((m) => m === 'ok')).toHaveLength(3);
    expect(out.filter((m) => m !== 'ok').every((m) => /exceeded its subrequest limit \(3 per request\)$/.test(m))).toBe(true);
    expect(embed.requests.length + image.requests.length).toBe(3);
  });
});

describe('the stand-in servers label themselves', () => {
  it('every answer carries the stand-in header, and JSON answers a stand_in field', async () => {
    const res = await fetch(`${embed.url}/v1/embeddings`, { method: 'POST', body: JSON.stringify({ model: BGE_BASE, input: 'x' }) });
    expect(res.headers.get(STAND_IN_HEADER)).toBe('embed');
    expect(await res.json()).toMatchObject({ stand_in: 'embed', data: [{ index: 0 }] });
  });
});
