import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { crc32, deflateSync } from 'node:zlib';
import { EdgeError } from '../../common/errors.js';

// A STAND-IN for a model server: a small OpenAI-compatible server (the subset vLLM serves
// that the agent's `ai` binding uses) that generates nothing; it echoes. `edge dev` runs
// one per region so `env.AI` answers without a GPU, and the tests use it to see which
// region's server answered. Its completions are deterministic and carry its label:
//   "[<label>] echo: <last user message>"   (chat)
//   "[<label>] echo: <prompt>"              (completions)
//   a fixed program in a ```js block      (chat whose system prompt asks for code mode's
//                                          run(question) over TOOLS: codeModeProgram)
// split into word tokens ("[eu-west] ", "echo: ", "hello ", "world"); max_tokens cuts the
// list (finish_reason "length"). Streamed tokens go out tokenDelayMs apart, each in its
// own write, so a test can see the first token arrive before the last one is sent.
//
// In-process:
//   const ai = await startOpenAiServer({ model: 'llama-3.1-8b', label: 'eu-west', tokenDelayMs: 50 });
//   ai.url                 http://127.0.0.1:<port>
//   ai.requests            every request, as it happens (see RecordedRequest)
//   ai.failure = { status: 500, body: '...' }   answer every completion with this until reset to null
//   await ai.close()
// As a process:
//   node --import tsx cli/local/model-stub.ts --port 0 --model M --label eu-west [--host 127.0.0.1] [--token-delay-ms 0]
//   prints "listening <url>" on stdout once it listens; SIGTERM or SIGINT stops it.
//
// Routes: GET /health (200), GET /v1/models, POST /v1/chat/completions, POST /v1/completions
// (stream and non-stream; stream_options.include_usage adds a usage chunk before [DONE]),
// POST /v1/embeddings and POST /v1/images/generations (response_format b64_json), so every
// task type of the catalogue has an answer of the right shape:
//   - chat with `tools` and the last message from the user: a call of the first tool, its
//     required string arguments filled with that message (numbers 1, booleans true);
//   - embeddings: a deterministic unit vector per text (sha256 of model and text), of the
//     model's real dimension (embeddingDimension: bge-small 384, bge-base 768, bge-large 1024);
//   - images: a real PNG (RGB, zlib, CRC'd chunks) of the requested size (default 256x256),
//     a colour from the prompt's hash, with a tEXt chunk saying it is a stand-in.
// Every answer is labelled: the header `x-edge-stand-in: <label>`, and JSON answers carry
// `"stand_in": "<label>"` beside the OpenAI fields.
// A wrong model or a malformed body is answered 400 with an OpenAI-style error object;
// model ANY_MODEL ('*') serves whatever model a request names.

/** As `model`: answer for any model name. */
export const ANY_MODEL = '*';

export interface OpenAiServerOptions {
  /** The one model this server serves (ANY_MODEL: every model). */
  model: string;
  /** Appears in every completion: "[label] echo: ...". */
  label: string;
  /** Pause between streamed tokens (default 0). */
  tokenDelayMs?: number;
  host?: string;
  port?: number;
}

export interface RecordedRequest {
  method: string;
  path: string;
  /** The parsed JSON body (undefined when there was none or it did not parse). */
  body: unknown;
  stream: boolean;
  status: number;
  /** The completion's tokens, when one was generated. */
  tokens: string[];
  /** performance.now() when each streamed token was written. */
  tokenSentAt: number[];
  /** The whole response was written. */
  finished: boolean;
  /** The client closed the connection before the response was complete. */
  closedEarly: boolean;
}

export interface OpenAiServer {
  url: string;
  port: number;
  requests: RecordedRequest[];
  /** When set, every completion request is answered with this status and body. */
  failure: { status: number; body?: string; contentType?: string } | null;
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 1024 * 1024;

interface ChatMessage { role: string; content: string }

/** The header (and JSON field, `stand_in`) that marks every answer of this server as a stand-in's. */
export const STAND_IN_HEADER = 'x-edge-stand-in';

/** Vector dimensions of well-known embedding models (matched on the id's last part, lower case). */
const EMBEDDING_DIMENSIONS: ReadonlyArray<[RegExp, number]> = [
  [/bge-small/, 384], [/bge-base/, 768], [/bge-large/, 1024], [/bge-m3/, 1024],
  [/embeddinggemma/, 768], [/qwen3-embedding-0\.6b/, 1024], [/plamo-embedding/, 2048],
  [/all-minilm/, 384], [/nomic-embed/, 768], [/text-embedding-3-small/, 1536], [/text-embedding-3-large/, 3072],
];
/** The dimension the stand-in gives an embedding model's vectors (768 for one it does not know). */
export function embeddingDimension(model: string): number {
  const name = model.toLowerCase().split('/').pop() ?? '';
  return EMBEDDING_DIMENSIONS.find(([re]) => re.test(name))?.[1] ?? 768;
}

/** A deterministic unit vector for a text: equal texts, equal vectors. */
function embed(model: string, text: string, dim: number): number[] {
  const out: number[] = [];
  for (let block = 0; out.length < dim; block++) {
    const h = createHash('sha256').update(`${model}\0${block}\0${text}`).digest();
    for (let i = 0; i + 1 < h.length && out.length < dim; i += 2) out.push(h.readUInt16BE(i) / 32768 - 1);
  }
  const norm = Math.sqrt(out.reduce((n, x) => n + x * x, 0)) || 1;
  return out.map((x) => x / norm);
}

function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

/** A real PNG: RGB, 8 bits, a colour from the prompt's hash shaded top to bottom, with a tEXt label. */
export function standInPng(width: number, height: number, prompt: string, label: string): Buffer {
  const [r, g, b] = createHash('sha256').update(prompt).digest();
  const row = (y: number) => {
    const line = Buffer.alloc(1 + width * 3); // filter byte 0 (None), then RGB
    const shade = height > 1 ? y / (height - 1) : 0;
    for (let x = 0; x < width; x++) {
      line[1 + x * 3] = Math.round(r! * (1 - shade));
      line[2 + x * 3] = Math.round(g! * (1 - shade));
      line[3 + x * 3] = Math.round(b! * (1 - shade));
    }
    return line;
  };
  const raw = Buffer.concat(Array.from({ length: height }, (_, y) => row(y)));
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  const text = Buffer.from(`Comment\0edge-isolates stand-in model server (${label}); not a generated image`, 'latin1');
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr), pngChunk('tEXt', text), pngChunk('IDAT', deflateSync(raw)), pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

const MAX_IMAGE_SIDE = 2048;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function words(text: string): number {
  return text.split(/\s+/).filter(Boolean).length;
}

/** Word tokens whose concatenation is the text. */
function tokenize(text: string): string[] {
  return text.match(/\S+\s*/g) ?? [];
}

class BadRequest extends EdgeError {
  constructor(message: string, readonly code = 'invalid_request_error') { super(message); }
}

interface Completion {
  /** A call of the request's first tool instead of text. */
  toolCall?: { name: string; arguments: string };
  chat: boolean;
  stream: boolean;
  includeUsage: boolean;
  tokens: string[];
  finishReason: 'stop' | 'length';
  promptTokens: number;
}

function parseCompletion(chat: boolean, body: unknown, model: string, label: string): Completion {
  if (!isRecord(body)) throw new BadRequest('the body must be a JSON object');
  checkModel(body, model);
  let text: string;
  let promptTokens: number;
  if (chat) {
    const messages = body.messages;
    if (!Array.isArray(messages) || messages.length === 0) throw new BadRequest('messages must be a non-empty array');
    const ok = messages.every((m): m is ChatMessage => isRecord(m) && typeof m.role === 'string' && typeof m.content === 'string');
    if (!ok) throw new BadRequest('each message needs a string role and a string content');
    const lastUser = [...messages].reverse().find((m) => m.role === 'user');
    const system = messages.find((m) => m.role === 'system')?.content ?? '';
    text = CODE_MODE_REQUEST.test(system) ? codeModeProgram(label) : `[${label}] echo: ${lastUser?.content ?? ''}`;
    promptTokens = messages.reduce((n, m) => n + words(m.content), 0);
  } else {
    if (typeof body.prompt !== 'string') throw new BadRequest('prompt must be a string');
    text = `[${label}] echo: ${body.prompt}`;
    promptTokens = words(body.prompt);
  }
  if (body.stream !== undefined && typeof body.stream !== 'boolean') throw new BadRequest('stream must be a boolean');
  const maxTokens = body.max_tokens;
  if (maxTokens !== undefined && maxTokens !== null && !(Number.isInteger(maxTokens) && (maxTokens as number) > 0)) {
    throw new BadRequest('max_tokens must be a positive integer');
  }
  let tokens = tokenize(text);
  let finishReason: Completion['finishReason'] = 'stop';
  if (typeof maxTokens === 'number' && tokens.length > maxTokens) {
    tokens = tokens.slice(0, maxTokens);
    finishReason = 'length';
  }
  const includeUsage = isRecord(body.stream_options) && body.stream_options.include_usage === true;
  const toolCall = chat ? toolCallOf(body) : undefined;
  return { chat, stream: body.stream === true, includeUsage, tokens, finishReason, promptTokens, ...(toolCall ? { toolCall } : {}) };
}

/**
 * "Code mode" (examples/code-mode.yaml): asked in the system prompt for a module with a
 * `run(question)` method over a TOOLS binding, the stand-in writes no code of its own; it
 * answers with this fixed program, so the example runs offline. The program is the pattern's
 * contract: TOOLS.list() names the tools, TOOLS.call(name, input) runs one.
 */
export const CODE_MODE_REQUEST = /\bTOOLS\b[\s\S]*\brun\(question\)|\brun\(question\)[\s\S]*\bTOOLS\b/;
export function codeModeProgram(label: string): string {
  return [
    '```js',
    `// [${label}] a stand-in model wrote this fixed program (it writes the same one whatever is asked).`,
    "import { WorkerEntrypoint } from 'cloudflare:workers';",
    'export default class extends WorkerEntrypoint {',
    '  async run(question) {',
    '    const [tool] = await this.env.TOOLS.list();',
    '    return { tool: tool.name, result: await this.env.TOOLS.call(tool.name, question) };',
    '  }',
    '}',
    '```',
  ].join('\n');
}

/** With tools and the user's turn: a call of the first tool, its required arguments filled in. */
function toolCallOf(body: Record<string, unknown>): Completion['toolCall'] {
  const tools = body.tools;
  if (!Array.isArray(tools) || tools.length === 0) return undefined;
  const messages = body.messages as ChatMessage[];
  const last = messages[messages.length - 1];
  if (last?.role !== 'user') return undefined;
  const fn = isRecord(tools[0]) && isRecord(tools[0].function) ? tools[0].function : undefined;
  if (!fn || typeof fn.name !== 'string') throw new BadRequest('each tool needs {type: "function", function: {name}}');
  const params = isRecord(fn.parameters) ? fn.parameters : {};
  const props = isRecord(params.properties) ? params.properties : {};
  const required = Array.isArray(params.required) ? params.required.filter((k): k is string => typeof k === 'string') : [];
  const args: Record<string, unknown> = {};
  for (const key of required) {
    const type = isRecord(props[key]) ? props[key].type : 'string';
    args[key] = type === 'number' || type === 'integer' ? 1 : type === 'boolean' ? true : last.content;
  }
  return { name: fn.name, arguments: JSON.stringify(args) };
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY_BYTES) throw new BadRequest(`the body is over ${MAX_BODY_BYTES} bytes`);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

function json(res: ServerResponse, status: number, value: unknown, label: string): void {
  const text = JSON.stringify(isRecord(value) && status < 300 ? { ...value, stand_in: label } : value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), [STAND_IN_HEADER]: label }).end(text);
}

function checkModel(body: Record<string, unknown>, model: string): void {
  if (model !== ANY_MODEL && body.model !== model) {
    throw new BadRequest(`The model \`${String(body.model)}\` does not exist; this server serves ${model}.`, 'model_not_found');
  }
}

/** POST /v1/embeddings: {model, input: string | string[]} -> {data: [{index, embedding}], usage}. */
function embeddingsAnswer(body: unknown, model: string): unknown {
  if (!isRecord(body)) throw new BadRequest('the body must be a JSON object');
  checkModel(body, model);
  const input = typeof body.input === 'string' ? [body.input] : body.input;
  if (!Array.isArray(input) || input.length === 0 || !input.every((t): t is string => typeof t === 'string')) {
    throw new BadRequest('input must be a string or a non-empty array of strings');
  }
  const name = String(body.model);
  const dim = embeddingDimension(name);
  const tokens = input.reduce((n, t) => n + words(t), 0);
  return {
    object: 'list', model: name,
    data: input.map((t, index) => ({ object: 'embedding', index, embedding: embed(name, t, dim) })),
    usage: { prompt_tokens: tokens, total_tokens: tokens },
  };
}

/** POST /v1/images/generations: {model, prompt, size?, response_format: b64_json} -> {created, data: [{b64_json}]}. */
function imageAnswer(body: unknown, model: string, label: string): unknown {
  if (!isRecord(body)) throw new BadRequest('the body must be a JSON object');
  checkModel(body, model);
  if (typeof body.prompt !== 'string' || body.prompt === '') throw new BadRequest('prompt must be a non-empty string');
  if (body.response_format !== undefined && body.response_format !== 'b64_json') throw new BadRequest('this server answers response_format b64_json only');
  let width = 256;
  let height = 256;
  if (body.size !== undefined) {
    const m = typeof body.size === 'string' ? /^(\d+)x(\d+)$/.exec(body.size) : null;
    if (!m) throw new BadRequest('size must be <width>x<height>');
    width = Number(m[1]);
    height = Number(m[2]);
    if (width < 1 || height < 1 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE) throw new BadRequest(`size: each side 1-${MAX_IMAGE_SIDE}`);
  }
  const png = standInPng(width, height, body.prompt, label);
  return { created: Math.floor(Date.now() / 1000), data: [{ b64_json: png.toString('base64') }] };
}

export async function startOpenAiServer(opts: OpenAiServerOptions): Promise<OpenAiServer> {
  const { model, label } = opts;
  const tokenDelayMs = opts.tokenDelayMs ?? 0;
  const requests: RecordedRequest[] = [];
  let seq = 0;
  const timers = new Set<NodeJS.Timeout>();
  const sleep = (ms: number) => new Promise<void>((resolve) => {
    const t = setTimeout(() => { timers.delete(t); resolve(); }, ms);
    timers.add(t);
  });

  const state: { failure: OpenAiServer['failure'] } = { failure: null };
  const server = createServer((req, res) => {
    const rec: RecordedRequest = {
      method: req.method ?? 'GET', path: new URL(req.url ?? '/', 'http://x').pathname, body: undefined, stream: false,
      status: 0, tokens: [], tokenSentAt: [], finished: false, closedEarly: false,
    };
    requests.push(rec);
    res.on('finish', () => { rec.finished = true; });
    res.on('close', () => { if (!res.writableFinished) rec.closedEarly = true; });
    const answer = (status: number, value: unknown) => { rec.status = status; json(res, status, value, label); };
    void (async () => {
      try {
        if (rec.method === 'GET' && rec.path === '/health') {
          rec.status = 200;
          res.writeHead(200, { 'content-length': 0 }).end();
          return;
        }
        if (rec.method === 'GET' && rec.path === '/v1/models') {
          answer(200, { object: 'list', data: [{ id: model === ANY_MODEL ? 'any' : model, object: 'model', created: 0, owned_by: `edge-isolates-test/${label}`, max_model_len: 8192 }] });
          return;
        }
        const chat = rec.path === '/v1/chat/completions';
        const other = rec.path === '/v1/embeddings' || rec.path === '/v1/images/generations';
        if (rec.method !== 'POST' || (!chat && !other && rec.path !== '/v1/completions')) {
          answer(404, { object: 'error', error: { message: `no route ${rec.method} ${rec.path}`, type: 'not_found', code: 404 } });
          return;
        }
        const raw = await readBody(req);
        try {
          rec.body = JSON.parse(raw.toString('utf8'));
        } catch {
          throw new BadRequest('the body is not valid JSON');
        }
        if (other) {
          const value = rec.path === '/v1/embeddings' ? embeddingsAnswer(rec.body, model) : imageAnswer(rec.body, model, label);
          if (state.failure) {
            const f = state.failure;
            rec.status = f.status;
            res.writeHead(f.status, { 'content-type': f.contentType ?? 'application/json' }).end(f.body ?? '');
            return;
          }
          answer(200, value);
          return;
        }
        const c = parseCompletion(chat, rec.body, model, label);
        rec.stream = c.stream;
        if (state.failure) {
          const f = state.failure;
          rec.status = f.status;
          res.writeHead(f.status, { 'content-type': f.contentType ?? 'application/json' }).end(f.body ?? '');
          return;
        }
        rec.tokens = c.tokens;
        const id = `${chat ? 'chatcmpl' : 'cmpl'}-${label}-${++seq}`;
        const created = Math.floor(Date.now() / 1000);
        const object = chat ? 'chat.completion' : 'text_completion';
        const usage = { prompt_tokens: c.promptTokens, completion_tokens: c.tokens.length, total_tokens: c.promptTokens + c.tokens.length };
        if (!c.stream) {
          const text = c.tokens.join('');
          const call = c.toolCall;
          const choice = call
            ? {
              index: 0, finish_reason: 'tool_calls', logprobs: null,
              message: { role: 'assistant', content: null, tool_calls: [{ id: `call-${label}-${seq}`, type: 'function', function: call }] },
            }
            : chat
            ? { index: 0, message: { role: 'assistant', content: text }, finish_reason: c.finishReason, logprobs: null }
            : { index: 0, text, finish_reason: c.finishReason, logprobs: null };
          answer(200, { id, object, created, model, choices: [choice], usage });
          return;
        }
        rec.status = 200;
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', [STAND_IN_HEADER]: label });
        res.flushHeaders();
        const chunkObject = chat ? 'chat.completion.chunk' : 'text_completion';
        const send = (value: unknown) => { res.write(`data: ${JSON.stringify(value)}\n\n`); };
        const choice = (token: string | null, finish: string | null) => (chat
          ? { index: 0, delta: token === null ? {} : { content: token }, finish_reason: finish, logprobs: null }
          : { index: 0, text: token ?? '', finish_reason: finish, logprobs: null });
        if (chat) send({ id, object: chunkObject, created, model, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] });
        for (const token of c.tokens) {
          if (tokenDelayMs > 0) await sleep(tokenDelayMs);
          if (res.destroyed) return;
          send({ id, object: chunkObject, created, model, choices: [choice(token, null)] });
          rec.tokenSentAt.push(performance.now());
        }
        send({ id, object: chunkObject, created, model, choices: [choice(null, c.finishReason)] });
        if (c.includeUsage) send({ id, object: chunkObject, created, model, choices: [], usage });
        res.end('data: [DONE]\n\n');
      } catch (err) {
        if (res.headersSent) { res.destroy(); return; }
        if (err instanceof BadRequest) answer(400, { object: 'error', error: { message: err.message, type: 'BadRequestError', code: err.code } });
        else answer(500, { object: 'error', error: { message: String(err), type: 'InternalServerError' } });
      }
    })();
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    port: address.port,
    requests,
    get failure() { return state.failure; },
    set failure(f) { state.failure = f; },
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

/** Runs the server as a process (argv: --model M --label L [--port 0] [--host H] [--token-delay-ms N]). */
export async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      model: { type: 'string' },
      label: { type: 'string' },
      'token-delay-ms': { type: 'string', default: '0' },
    },
    strict: true,
  });
  if (!values.model || !values.label) {
    process.stderr.write('usage: model-stub.ts --model M --label L [--port 0] [--host 127.0.0.1] [--token-delay-ms 0]\n');
    process.exit(2);
  }
  const server = await startOpenAiServer({
    model: values.model, label: values.label, host: values.host,
    port: Number(values.port), tokenDelayMs: Number(values['token-delay-ms']),
  });
  process.stdout.write(`listening ${server.url}\n`);
  const stop = () => { void server.close().then(() => process.exit(0)); };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`model-stub: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
