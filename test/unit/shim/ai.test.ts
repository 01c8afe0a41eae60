import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { startOpenAiServer, type OpenAiServer } from '../../../cli/local/model-stub.js';
import { evaluate, TestWorker, WorkerThrew, type LoadOptions } from './run-worker.js';

// env.AI (an `ai` binding) against a local OpenAI-compatible server: the isolate sees a
// frozen object with run(); the host makes the call, translates it and streams it back.

const MODEL = 'llama-3.1-8b';
let server: OpenAiServer;

beforeAll(async () => {
  server = await startOpenAiServer({ model: MODEL, label: 'eu-west', tokenDelayMs: 60 });
});
afterAll(async () => {
  await server.close();
});
beforeEach(() => {
  server.failure = null;
  server.requests.length = 0;
});

const opts = (extra: LoadOptions = {}): LoadOptions => ({ ai: { AI: { model: MODEL, url: server.url } }, ...extra });

/** Runs `body` in a handler with env.AI bound to the fixture; returns what it returns. */
const run = <T = unknown>(body: string, extra: LoadOptions = {}) => evaluate<T>(body, {}, opts(extra));

async function thrown(body: string, extra: LoadOptions = {}): Promise<{ type: string; message: string }> {
  try {
    const value = await run(body, extra);
    throw new Error(`expected the worker code to throw, but it returned ${JSON.stringify(value)}`);
  } catch (err) {
    if (err instanceof WorkerThrew) return err.thrown;
    throw err;
  }
}

/** The `data:` payloads of an SSE text. */
const events = (text: string): string[] => text.split('\n\n').filter(Boolean).map((e) => {
  expect(e.startsWith('data: ')).toBe(true);
  return e.slice(6);
});

const STREAM_WORKER = `export default { async fetch(request, env) {
  const { searchParams } = new URL(request.url);
  const inputs = searchParams.has('prompt')
    ? { prompt: searchParams.get('prompt'), stream: true }
    : { messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: searchParams.get('q') }], stream: true };
  return new Response(await env.AI.run('${MODEL}', inputs), { headers: { 'content-type': 'text/event-stream' } });
} }`;

describe('env.AI.run: whole answers', () => {
  it('chat messages resolve { response, usage } from the region\'s server, with the inputs translated', async () => {
    const out = await run(`return env.AI.run('${MODEL}', {
      messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello world' }],
      temperature: 0.2, top_p: 0.9, seed: 7, stop: ['\\n\\n'],
    });`);
    expect(out).toEqual({
      response: '[eu-west] echo: hello world',
      usage: { prompt_tokens: 4, completion_tokens: 4, total_tokens: 8 },
    });
    expect(server.requests).toHaveLength(1);
    expect(server.requests[0]).toMatchObject({ method: 'POST', path: '/v1/chat/completions', status: 200 });
    expect(server.requests[0]!.body).toEqual({
      model: MODEL, stream: false, max_tokens: 256, temperature: 0.2, top_p: 0.9, seed: 7, stop: ['\n\n'],
      messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello world' }],
    });
  });

  it('prompt inputs go to /v1/completions; max_tokens is passed on', async () => {
    const out = await run(`return env.AI.run('${MODEL}', { prompt: 'say hi to everyone', max_tokens: 3 });`);
    expect(out).toEqual({ response: '[eu-west] echo: say ', usage: { prompt_tokens: 4, completion_tokens: 3, total_tokens: 7 } });
    expect(server.requests[0]).toMatchObject({ path: '/v1/completions', body: { model: MODEL, prompt: 'say hi to everyone', max_tokens: 3, stream: false } });
  });

  it('a model the binding may not call is refused in Workers AI\'s wording (5007), naming what it may call, before anything is sent', async () => {
    const err = await thrown(`return env.AI.run('mistral-7b', { prompt: 'x' });`);
    expect(err.message).toBe(`env.AI.run(): 5007: No such model mistral-7b or task (env.AI may call: ${MODEL})`);
    expect(server.requests).toEqual([]);
  });

  it('refuses malformed inputs with a message naming the field', async () => {
    const out = await run<string[]>(`const out = [];
      for (const inputs of [
        {},
        { prompt: 'x', messages: [{ role: 'user', content: 'y' }] },
        { messages: [{ role: 'wizard', content: 'y' }] },
        { prompt: 'x', max_tokens: -1 },
        { prompt: 'x', lora: 'mine' },
        [1, 2],
        { prompt: 1n },
      ]) {
        try { await env.AI.run('${MODEL}', inputs); out.push('resolved'); } catch (e) { out.push(e.constructor.name + ': ' + e.message); }
      }
      return out;`);
    expect(out[0]).toMatch(/^Error: env\.AI\.run\(\): 5006: invalid inputs for text-generation model llama-3\.1-8b: inputs need exactly one of messages \(chat\) or prompt/);
    expect(out[1]).toMatch(/exactly one of messages \(chat\) or prompt/);
    expect(out[2]).toMatch(/invalid inputs for text-generation model llama-3\.1-8b: messages\.0\.role: /);
    expect(out[3]).toMatch(/llama-3\.1-8b: max_tokens: /);
    expect(out[4]).toMatch(/llama-3\.1-8b: .*lora/);
    expect(out[5]).toMatch(/^TypeError: env\.AI\.run\(\): inputs must be an object/);
    expect(out[6]).toMatch(/^TypeError: env\.AI\.run\(\): inputs cannot be serialized as JSON/);
    expect(server.requests).toEqual([]);
  });

  it('a server error rejects naming the binding and the status, never the server\'s address', async () => {
    const secret = server.url;
    server.failure = { status: 500, body: JSON.stringify({ object: 'error', message: `engine on ${secret} ran out of KV cache` }) };
    const whole = await thrown(`return env.AI.run('${MODEL}', { prompt: 'x' });`);
    expect(whole.message).toBe('env.AI.run(): the model server answered 500: engine on <model server> ran out of KV cache');
    const streamed = await thrown(`return env.AI.run('${MODEL}', { prompt: 'x', stream: true });`);
    expect(streamed.message).toMatch(/^env\.AI\.run\(\): the model server answered 500/);

    server.failure = { status: 200, body: 'this is not json', contentType: 'text/plain' };
    const badJson = await thrown(`return env.AI.run('${MODEL}', { messages: [{ role: 'user', content: 'x' }] });`);
    expect(badJson.message).toBe('env.AI.run(): the model server answered 200 with a body that is not JSON');

    server.failure = { status: 503, body: '' };
    const bare = await thrown(`return env.AI.run('${MODEL}', { prompt: 'x' });`);
    expect(bare.message).toBe('env.AI.run(): the model server answered 503');
    for (const m of [whole.message, streamed.message, badJson.message, bare.message]) {
      expect(m).not.toContain(String(server.port));
      expect(m).not.toContain('127.0.0.1');
    }
  });

  it('an unreachable server is reported without its address', async () => {
    const dead = await startOpenAiServer({ model: MODEL, label: 'gone' });
    const url = dead.url;
    await dead.close();
    const err = await thrown(`return env.AI.run('${MODEL}', { prompt: 'x' });`, { ai: { AI: { model: MODEL, url } } });
    expect(err.message).toMatch(/^env\.AI\.run\(\): could not reach the model server \(ECONNREFUSED\)$/);
  });

  it('each run() counts against limits.subrequests, together with fetch', async () => {
    const out = await run<string[]>(`const out = [];
      for (let i = 0; i < 3; i++) {
        try { out.push((await env.AI.run('${MODEL}', { prompt: 'n' + i })).response); } catch (e) { out.push(e.message); }
      }
      try { await fetch('${server.url}/health'); out.push('fetched'); } catch (e) { out.push(e.message); }
      return out;`, { limits: { subrequests: 2 } });
    expect(out.slice(0, 2)).toEqual(['[eu-west] echo: n0', '[eu-west] echo: n1']);
    expect(out[2]).toBe('env.AI.run(): worker test-worker exceeded its subrequest limit (2 per request)');
    expect(out[3]).toMatch(/exceeded its subrequest limit \(2 per request\)$/);
    expect(server.requests).toHaveLength(2);
  });
});

describe('env.AI is opaque to the worker', () => {
  it('the worker cannot see the server\'s URL', async () => {
    const out = await run<Record<string, unknown>>(`
      const ai = env.AI;
      return {
        env: JSON.stringify(env), keys: Object.keys(env), aiKeys: Reflect.ownKeys(ai).map(String), frozen: Object.isFrozen(ai),
        run: String(ai.run), proto: Object.getPrototypeOf(ai) === Object.prototype, json: JSON.stringify(ai),
        descriptors: JSON.stringify(Object.getOwnPropertyDescriptors(ai)),
        globals: Object.getOwnPropertyNames(globalThis).filter((n) => n.startsWith('__edge')),
      };`, { env: { GREETING: 'hi' } });
    expect(out).toMatchObject({ env: '{"GREETING":"hi","AI":{}}', keys: ['GREETING', 'AI'], aiKeys: ['run'], frozen: true, proto: true, json: '{}', globals: [] });
    const everything = JSON.stringify(out);
    expect(everything).not.toContain(String(server.port));
    expect(everything).not.toContain('127.0.0.1');
    expect(everything).not.toContain('http://');
  });

  it('replacing run() is refused (the binding is frozen; modules are strict)', async () => {
    const out = await run(`try { env.AI.run = () => 'mine'; return 'replaced'; } catch (e) { return e.constructor.name; }`);
    expect(out).toBe('TypeError');
  });
});

describe('env.AI.run with stream: true', () => {
  it('streams Cloudflare SSE token by token as the server sends them', async () => {
    const w = await TestWorker.load(STREAM_WORKER, opts());
    try {
      const { id, response } = await w.start({ url: 'http://example.com/?q=stream%20these%20words%20one%20by%20one%20as%20the%20server%20writes%20them' });
      expect(response.status).toBe(200);
      expect(response.headers).toContainEqual(['content-type', 'text/event-stream']);
      expect(response.body).toBe('stream');
      const chunks: Uint8Array[] = [];
      let firstAt = 0;
      for (let c = await w.isolate.pullBody(id); c !== null; c = await w.isolate.pullBody(id)) {
        if (chunks.length === 0) firstAt = performance.now();
        chunks.push(c);
      }
      await w.isolate.finish(id);
      const rec = server.requests[0]!;
      expect(rec).toMatchObject({ path: '/v1/chat/completions', stream: true, finished: true, closedEarly: false });
      expect(rec.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
      // True streaming: the worker's response had its first bytes before the server wrote its last token.
      expect(chunks.length).toBeGreaterThan(1);
      expect(firstAt).toBeLessThan(rec.tokenSentAt.at(-1)!);

      const data = events(Buffer.concat(chunks).toString('utf8'));
      expect(data.at(-1)).toBe('[DONE]');
      const parsed = data.slice(0, -1).map((d) => JSON.parse(d) as { response: string; usage?: unknown });
      expect(parsed.map((e) => e.response).join('')).toBe('[eu-west] echo: stream these words one by one as the server writes them');
      expect(parsed.slice(0, -1).map((e) => e.response)).toEqual(rec.tokens);
      expect(parsed.at(-1)).toEqual({ response: '', usage: { prompt_tokens: 13, completion_tokens: 13, total_tokens: 26 } });
    } finally {
      w.dispose();
    }
  });

  it('prompt inputs stream too', async () => {
    const w = await TestWorker.load(STREAM_WORKER, opts());
    try {
      const reply = await w.fetch({ url: 'http://example.com/?prompt=once%20upon' });
      const data = events(reply.text);
      expect(data.at(-1)).toBe('[DONE]');
      expect(data.slice(0, -1).map((d) => (JSON.parse(d) as { response: string }).response).join('')).toBe('[eu-west] echo: once upon');
      expect(server.requests[0]).toMatchObject({ path: '/v1/completions', stream: true, finished: true });
    } finally {
      w.dispose();
    }
  });

  it('the worker can read the stream itself', async () => {
    const out = await run<{ chunks: number; text: string }>(`
      const stream = await env.AI.run('${MODEL}', { messages: [{ role: 'user', content: 'read me' }], stream: true });
      let chunks = 0; let text = '';
      const decoder = new TextDecoder();
      for await (const chunk of stream) { chunks++; text += decoder.decode(chunk, { stream: true }); }
      return { chunks, text };`);
    expect(out.chunks).toBeGreaterThan(1);
    expect(events(out.text).at(-1)).toBe('[DONE]');
  });

  it('a broken stream from the server errors the worker\'s stream, naming the binding', async () => {
    const read = `const out = [];
      const stream = await env.AI.run('${MODEL}', { messages: [{ role: 'user', content: 'x' }], stream: true });
      const decoder = new TextDecoder();
      try { for await (const chunk of stream) out.push(decoder.decode(chunk)); } catch (e) { out.push(e.constructor.name + ': ' + e.message); }
      return out;`;
    const token = 'data: {"choices":[{"delta":{"content":"partial"}}]}\n\n';
    server.failure = { status: 200, contentType: 'text/event-stream', body: token };
    expect(await run(read)).toEqual(['data: {"response":"partial"}\n\n', 'Error: env.AI.run(): the model server ended its stream before [DONE]']);
    server.failure = { status: 200, contentType: 'text/event-stream', body: `${token}data: {not json\n\n` };
    expect(await run(read)).toEqual(['data: {"response":"partial"}\n\n', 'Error: env.AI.run(): the model server sent a stream event that is not JSON']);
    server.failure = { status: 200, contentType: 'text/event-stream', body: `data: {"object":"error","message":"out of memory on ${server.url}"}\n\n` };
    expect(await run(read)).toEqual(['Error: env.AI.run(): the model server failed mid-stream: out of memory on <model server>']);
  });

  it('cancelling the response stream closes the upstream request', async () => {
    const w = await TestWorker.load(STREAM_WORKER, opts());
    try {
      const { id } = await w.start({ url: 'http://example.com/?q=a%20long%20answer%20that%20will%20be%20cut%20short%20by%20the%20client' });
      expect(await w.isolate.pullBody(id)).not.toBeNull();
      w.isolate.cancel(id, 'client closed the connection');
      const rec = server.requests[0]!;
      // Before the request is finished: the cancel itself reached the server.
      await vi.waitFor(() => expect(rec.closedEarly).toBe(true), { timeout: 3000 });
      expect(rec.finished).toBe(false);
      expect(rec.tokenSentAt.length).toBeLessThan(rec.tokens.length);
      await w.isolate.finish(id);
    } finally {
      w.dispose();
    }
  });

  it('a stream the worker cancels itself closes the upstream request', async () => {
    const w = await TestWorker.load(`export default { async fetch(request, env) {
      const stream = await env.AI.run('${MODEL}', { prompt: 'this answer is far too long to wait for', stream: true });
      const reader = stream.getReader();
      const first = await reader.read();
      await reader.cancel('enough');
      // The request stays open until the test ends its body: only the cancel can close the upstream request.
      await request.text();
      return new Response(new TextDecoder().decode(first.value));
    } }`, opts());
    try {
      const call = w.isolate.begin({ url: 'http://example.com/', method: 'POST', headers: [], body: 'stream' });
      await vi.waitFor(() => expect(server.requests[0]?.closedEarly).toBe(true), { timeout: 3000 });
      expect(server.requests[0]!.finished).toBe(false);
      w.isolate.pushBody(call.id, null);
      const reply = await w.collect(call.id, await call.response);
      expect(reply.text).toBe('data: {"response":"[eu-west] "}\n\n');
      await w.isolate.finish(call.id);
    } finally {
      w.dispose();
    }
  });

  it('a stream left open when the request ends, or when the isolate is disposed, is closed upstream', async () => {
    const w = await TestWorker.load(`let kept; export default { async fetch(request, env) {
      kept = await env.AI.run('${MODEL}', { prompt: 'left open and never read by anyone at all', stream: true });
      return new Response('not waiting');
    } }`, opts());
    try {
      expect((await w.fetch()).text).toBe('not waiting');
      await vi.waitFor(() => expect(server.requests[0]?.closedEarly).toBe(true), { timeout: 3000 });
    } finally {
      w.dispose();
    }

    const d = await TestWorker.load(STREAM_WORKER, opts());
    const { id } = await d.start({ url: 'http://example.com/?q=disposed%20in%20the%20middle%20of%20a%20long%20long%20answer' });
    expect(await d.isolate.pullBody(id)).not.toBeNull();
    d.dispose();
    await vi.waitFor(() => expect(server.requests[1]?.closedEarly).toBe(true), { timeout: 3000 });
  });
});

describe('the stand-in model server as a process', () => {
  it('prints "listening <url>" and serves /health, /v1/models and completions', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'cli/local/model-stub.ts', '--port', '0', '--model', 'm-1', '--label', 'us-east'],
      { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const lines = createInterface({ input: child.stdout });
      const [line] = (await once(lines, 'line')) as [string];
      const url = /^listening (http:\/\/\S+)$/.exec(line)?.[1];
      expect(url).toBeDefined();
      expect((await fetch(`${url}/health`)).status).toBe(200);
      expect(await (await fetch(`${url}/v1/models`)).json()).toMatchObject({ data: [{ id: 'm-1' }] });
      const post = (path: string, body: unknown) => fetch(`${url}${path}`, { method: 'POST', body: JSON.stringify(body) });
      const chat = await post('/v1/chat/completions', { model: 'm-1', messages: [{ role: 'user', content: 'hi there' }] });
      expect(await chat.json()).toMatchObject({ choices: [{ message: { content: '[us-east] echo: hi there' } }] });
      expect((await post('/v1/completions', { model: 'other', prompt: 'x' })).status).toBe(400);
      expect((await post('/v1/completions', 'not an object')).status).toBe(400);
    } finally {
      child.kill('SIGTERM');
      if (child.exitCode === null) await once(child, 'exit');
    }
  }, 20_000);
});
