import * as z from 'zod';
import type { AiRunResult, AiToolCall, AiUsage, WorkerEnv } from '../abi/bridge.js';
import { MAX_SUBREQUEST_BODY_BYTES as MAX_AI_BYTES } from '../abi/bridge.js';
import { describeIssues, EdgeError } from '../../common/errors.js';

// The host side of `ai` bindings: env.<name>.run(model, inputs) in the isolate becomes
// one call to the region's OpenAI-compatible model server of that model (vLLM-style), made
// here. A binding may call its `model` and its `models`; each has the catalogue's task type:
//   text-embeddings: { text } -> POST /v1/embeddings -> { shape: [n, dim], data }
//   text-to-image:   { prompt, ... } -> POST /v1/images/generations (b64_json) -> the
//                    decoded bytes (the isolate wraps them in a ReadableStream, as Workers)
//   text-generation: below; `tools` go out as OpenAI tools and the server's tool calls come
//                    back as Workers AI's `tool_calls`.
// Inputs in Cloudflare Workers AI's text-generation shape are translated to
// POST <url>/v1/chat/completions (messages) or <url>/v1/completions (prompt); answers are
// translated back: `{ response, usage }`, or for `stream: true` Cloudflare's SSE
// (`data: {"response":"<token>"}\n\n` ... `data: [DONE]\n\n`), produced as the server's
// tokens arrive. The server's URL stays here: the isolate knows bindings by name only,
// and no message that reaches it names the URL.
//
// One AiCalls per isolate. Every call it has under way (a request waiting for its answer,
// an open stream) is aborted, and its upstream socket released, by cancel(handle) (the
// worker cancelled the stream), by closeAll() (the request ended, or the isolate was
// disposed, e.g. for its wall-time limit).

// What one call may send or receive (inputs, a whole answer, a stream's upstream bytes) is
// bounded like a fetch subrequest's body: MAX_AI_BYTES = MAX_SUBREQUEST_BODY_BYTES.

/** Cloudflare's default for max_tokens. */
const DEFAULT_MAX_TOKENS = 256;
/** Server messages quoted in errors are cut to this many characters. */
const MAX_QUOTED_CHARS = 300;

const MessageSchema = z.object({
  role: z.enum(['system', 'user', 'assistant', 'tool', 'developer']),
  content: z.string(),
  name: z.string().max(256).optional(),
  // A conversation that continues after a tool call: the assistant's calls, the tool's answer.
  tool_call_id: z.string().max(256).optional(),
  tool_calls: z.array(z.looseObject({})).max(64).optional(),
}).strict();

const JsonSchemaObject = z.looseObject({});
/** Workers AI's tool: the OpenAI shape ({type, function}) or the legacy one ({name, description, parameters}). */
const ToolSchema = z.union([
  z.object({
    type: z.literal('function'),
    function: z.object({ name: z.string().min(1).max(256), description: z.string().max(4096).optional(), parameters: JsonSchemaObject.optional() }).strict(),
  }).strict(),
  z.object({ name: z.string().min(1).max(256), description: z.string().max(4096).optional(), parameters: JsonSchemaObject.optional() }).strict(),
]);

const finite = () => z.number().refine(Number.isFinite, 'must be a finite number');

/** Workers AI text-generation inputs (the subset an OpenAI-compatible server can honour). */
export const AiInputsSchema = z.object({
  messages: z.array(MessageSchema).min(1).max(4096).optional(),
  prompt: z.string().optional(),
  stream: z.boolean().optional(),
  max_tokens: z.number().int().min(1).max(1_000_000).optional(),
  temperature: finite().min(0).optional(),
  top_p: finite().min(0).max(1).optional(),
  top_k: z.number().int().min(1).optional(),
  seed: z.number().int().min(0).optional(),
  stop: z.union([z.string(), z.array(z.string()).max(16)]).optional(),
  repetition_penalty: finite().optional(),
  frequency_penalty: finite().optional(),
  presence_penalty: finite().optional(),
  tools: z.array(ToolSchema).min(1).max(128).optional(),
  functions: z.array(z.object({ name: z.string().min(1).max(256), code: z.string() }).strict()).max(0, 'functions (embedded function calling) are not supported here; use tools').optional(),
}).strict().refine((i) => (i.messages === undefined) !== (i.prompt === undefined), {
  message: 'inputs need exactly one of messages (chat) or prompt (completion)',
});
export type AiInputs = z.infer<typeof AiInputsSchema>;

/** Workers AI text-embeddings inputs (AiTextEmbeddingsInput); at most 100 texts a call, as Workers AI. */
export const AiEmbeddingsInputsSchema = z.object({
  text: z.union([z.string(), z.array(z.string()).min(1).max(100)]),
}).strict();
export type AiEmbeddingsInputs = z.infer<typeof AiEmbeddingsInputsSchema>;

const dimension = () => z.number().int().min(64).max(4096);
/** Workers AI text-to-image inputs (AiTextToImageInput), less img2img and inpainting (image, mask). */
export const AiImageInputsSchema = z.object({
  prompt: z.string().min(1).max(8192),
  negative_prompt: z.string().max(8192).optional(),
  height: dimension().optional(),
  width: dimension().optional(),
  num_steps: z.number().int().min(1).max(50).optional(),
  guidance: finite().min(0).optional(),
  seed: z.number().int().min(0).optional(),
}).strict();
export type AiImageInputs = z.infer<typeof AiImageInputsSchema>;

type Tool = z.infer<typeof ToolSchema>;
/** Tools as the OpenAI API takes them. */
function toOpenAiTools(tools: Tool[] | undefined): Array<{ type: 'function'; function: Record<string, unknown> }> | undefined {
  if (!tools) return undefined;
  return tools.map((t) => ('type' in t ? { type: 'function', function: t.function } : { type: 'function', function: { ...t } }));
}

const ToolCallAnswerSchema = z.object({
  id: z.string().optional(),
  type: z.string().optional(),
  function: z.object({ name: z.string(), arguments: z.string() }),
});

/** An OpenAI tool call in Workers AI's output shape (both its fields and the legacy {name, arguments}). */
function workersToolCall(c: z.infer<typeof ToolCallAnswerSchema>, i: number): AiToolCall {
  let args: unknown;
  try {
    args = JSON.parse(c.function.arguments);
  } catch {
    args = c.function.arguments;
  }
  return { id: c.id ?? `call_${i}`, type: 'function', function: { name: c.function.name, arguments: c.function.arguments }, name: c.function.name, arguments: args };
}

const EmbeddingsAnswerSchema = z.object({
  data: z.array(z.object({ index: z.number().int().min(0), embedding: z.array(z.number()) })).min(1),
});
const ImageAnswerSchema = z.object({
  data: z.array(z.object({ b64_json: z.string().min(1) })).min(1),
});

const UsageSchema = z.object({
  prompt_tokens: z.number().int().min(0),
  completion_tokens: z.number().int().min(0),
  total_tokens: z.number().int().min(0),
});

const ChatAnswerSchema = z.object({
  choices: z.array(z.object({ message: z.object({
    content: z.string().nullable().optional(),
    tool_calls: z.array(ToolCallAnswerSchema).nullable().optional(),
  }) })).min(1),
  usage: UsageSchema.nullable().optional(),
});
const CompletionAnswerSchema = z.object({
  choices: z.array(z.object({ text: z.string() })).min(1),
  usage: UsageSchema.nullable().optional(),
});
const ChatChunkSchema = z.object({
  choices: z.array(z.object({ delta: z.object({ content: z.string().nullable().optional() }).optional() })),
  usage: UsageSchema.nullable().optional(),
});
const CompletionChunkSchema = z.object({
  choices: z.array(z.object({ text: z.string().nullable().optional() })),
  usage: UsageSchema.nullable().optional(),
});

export class AiError extends EdgeError {}

const encoder = new TextEncoder();
const sse = (value: unknown): string => `data: ${JSON.stringify(value)}\n\n`;
const SSE_DONE = 'data: [DONE]\n\n';
const toArrayBuffer = (b: Uint8Array): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;

/** A call under way: aborting it releases the upstream connection. */
interface Upstream {
  abort: AbortController;
}

/** One streamed answer: the server's SSE, translated to Cloudflare's as it arrives. */
class AiStream implements Upstream {
  readonly abort = new AbortController();
  private readonly decoder = new TextDecoder();
  private buffer = '';
  private data: string[] = [];
  private bytes = 0;
  private sawDone = false;
  private ended = false;
  private usage: AiUsage | undefined;
  /** A bad event or a truncated stream: thrown once the bytes before it have been read. */
  private failure: Error | undefined;
  /** Reads are serialized: one pull at a time. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    readonly target: AiCallTarget,
    private readonly reader: ReadableStreamDefaultReader<Uint8Array>,
  ) {}

  /** The next translated bytes, or null at the end. */
  read(): Promise<Uint8Array | null> {
    const next = this.chain.then(() => this.pull());
    this.chain = next.catch(() => {});
    return next;
  }

  private async pull(): Promise<Uint8Array | null> {
    for (;;) {
      if (this.failure) throw this.failure;
      // After [DONE] (already passed on with the last bytes) the answer is over.
      if (this.ended || this.sawDone) return null;
      const { done, value } = await this.reader.read();
      let out: string;
      if (done) {
        // A last event the server did not end with a blank line still counts.
        out = this.feed(`${this.decoder.decode()}\n\n`);
        if (!this.sawDone && !this.failure) this.failure = this.target.error('the model server ended its stream before [DONE]');
        this.ended = true;
      } else {
        this.count(value.byteLength);
        out = this.feed(this.decoder.decode(value, { stream: true }));
      }
      const tail = this.sawDone ? (this.usage ? sse({ response: '', usage: this.usage }) : '') + SSE_DONE : '';
      if (out || tail) return encoder.encode(out + tail);
      if (this.failure) throw this.failure;
    }
  }

  private count(n: number): void {
    this.bytes += n;
    if (this.bytes > MAX_AI_BYTES) throw this.target.error(`the model server's stream is over the ${MAX_AI_BYTES}-byte limit`);
  }

  /** Parses SSE lines; returns the Cloudflare events for the tokens they carry. */
  private feed(text: string): string {
    this.buffer += text;
    let out = '';
    for (let nl = this.buffer.indexOf('\n'); nl >= 0 && !this.sawDone && !this.failure; nl = this.buffer.indexOf('\n')) {
      let line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        const data = this.data.join('\n');
        this.data = [];
        if (!data) continue;
        try {
          out += this.event(data);
        } catch (err) {
          // The tokens before a bad event still reach the worker; the error comes next.
          this.failure = err instanceof Error ? err : new Error(String(err));
          break;
        }
      } else if (line.startsWith('data:')) {
        this.data.push(line.slice(line.startsWith('data: ') ? 6 : 5));
      }
      // Comments (":...") and other fields (event:, id:, retry:) carry nothing here.
    }
    return out;
  }

  private event(data: string): string {
    if (data.trim() === '[DONE]') { this.sawDone = true; return ''; }
    let value: unknown;
    try {
      value = JSON.parse(data);
    } catch {
      throw this.target.error('the model server sent a stream event that is not JSON');
    }
    const upstreamError = errorMessageOf(value);
    if (upstreamError !== undefined) throw this.target.error(`the model server failed mid-stream: ${this.target.quote(upstreamError)}`);
    const parsed = (this.target.chat ? ChatChunkSchema : CompletionChunkSchema).safeParse(value);
    if (!parsed.success) throw this.target.error(`the model server sent a stream event of an unexpected shape (${describeIssues(parsed.error)})`);
    if (parsed.data.usage) this.usage = parsed.data.usage;
    const first = parsed.data.choices[0];
    const token = first === undefined ? undefined : 'delta' in first ? first.delta?.content : 'text' in first ? first.text : undefined;
    return token ? sse({ response: token }) : '';
  }

  /** True when the server's response has been read to its end. */
  get drained(): boolean { return this.ended; }

  /**
   * After [DONE]: reads what is left of the server's response in the background, so the
   * connection can be reused, for at most DRAIN_MS (then, or past the byte limit, the
   * connection is dropped). `done` is called either way.
   */
  drain(done: () => void): void {
    const timer = setTimeout(() => this.close(), DRAIN_MS);
    timer.unref();
    void (async () => {
      try {
        for (;;) {
          const r = await this.reader.read();
          if (r.done) break;
          this.count(r.value.byteLength);
        }
        this.ended = true;
      } catch {
        this.close();
      } finally {
        clearTimeout(timer);
        done();
      }
    })();
  }

  close(): void {
    this.ended = true;
    this.abort.abort();
    this.reader.cancel().catch(() => {});
  }
}

/** How long the rest of a response after [DONE] is waited for (see AiStream.drain). */
const DRAIN_MS = 5000;

/** What a stream needs to know about its call. */
interface AiCallTarget {
  chat: boolean;
  error(message: string, cause?: unknown): AiError;
  quote(text: string): string;
}

function errorMessageOf(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as { error?: unknown; message?: unknown; object?: unknown };
  if (typeof v.error === 'string') return v.error;
  if (typeof v.error === 'object' && v.error !== null && typeof (v.error as { message?: unknown }).message === 'string') {
    return (v.error as { message: string }).message;
  }
  if (v.object === 'error' && typeof v.message === 'string') return v.message;
  return undefined;
}

function networkCode(err: unknown): string {
  const cause = (err as { cause?: { code?: unknown } } | null)?.cause;
  return typeof cause?.code === 'string' && /^[A-Z_]+$/.test(cause.code) ? cause.code : 'network error';
}

/** The `ai` calls of one isolate. */
export class AiCalls {
  private nextHandle = 1;
  private readonly streams = new Map<number, AiStream>();
  private readonly pending = new Set<Upstream>();
  private closed = false;

  constructor(private readonly bindings: NonNullable<WorkerEnv['ai']>) {}

  /**
   * Starts env.<binding>.run(model, inputs): `count` is called (and may throw) once the
   * call is known to be valid, before anything is sent. The model picks the server and the
   * task (the catalogue's): text generation, text embeddings or text to image.
   */
  async run(binding: string, model: string, inputsJson: string, count: () => void): Promise<AiRunResult> {
    const config = Object.hasOwn(this.bindings, binding) ? this.bindings[binding] : undefined;
    if (!config) throw new AiError(`env.${binding} is not an ai binding of this worker`);
    const what = `env.${binding}.run()`;
    const served = model === config.model
      ? { url: config.url, task: config.task ?? 'text-generation' as const }
      : config.models && Object.hasOwn(config.models, model) ? config.models[model] : undefined;
    if (!served) {
      // Workers AI's wording (error 5007), then what this binding may call.
      const callable = [config.model, ...Object.keys(config.models ?? {})].filter((m) => m !== '');
      throw new AiError(`${what}: 5007: No such model ${model} or task (env.${binding} may call: ${callable.join(', ') || 'none'})`);
    }
    if (inputsJson.length > MAX_AI_BYTES) throw new AiError(`${what}: inputs are over the ${MAX_AI_BYTES}-byte limit`);
    let raw: unknown;
    try {
      raw = JSON.parse(inputsJson);
    } catch {
      throw new AiError(`${what}: inputs are not JSON`);
    }
    const schema = served.task === 'text-embeddings' ? AiEmbeddingsInputsSchema
      : served.task === 'text-to-image' ? AiImageInputsSchema : AiInputsSchema;
    const parsed = schema.safeParse(raw);
    // Workers AI's error 5006 ("Error: required properties at '/' are 'text'") names the task's input shape.
    if (!parsed.success) throw new AiError(`${what}: 5006: invalid inputs for ${served.task} model ${model}: ${describeIssues(parsed.error)}`);
    if (this.closed) throw new AiError(`${what}: the request has ended`);
    try {
      count();
    } catch (err) {
      throw new AiError(`${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }

    let base: URL;
    try {
      base = new URL(served.url.endsWith('/') ? served.url : `${served.url}/`);
      if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new Error('scheme');
    } catch {
      throw new AiError(`${what}: the model server address for ${model} is misconfigured (see the agent's configuration)`);
    }
    const secrets = [served.url.replace(/\/+$/, ''), base.origin, base.host, base.hostname].filter((s) => s.length > 0);
    const quote = (text: string): string => {
      let out = text;
      for (const s of secrets) out = out.split(s).join('<model server>');
      out = out.replace(/\p{Cc}+/gu, ' ').trim();
      return out.length > MAX_QUOTED_CHARS ? `${out.slice(0, MAX_QUOTED_CHARS)}...` : out;
    };
    const error = (message: string, cause?: unknown) => new AiError(`${what}: ${message}`, cause === undefined ? undefined : { cause });

    if (served.task === 'text-embeddings') {
      const { text } = parsed.data as AiEmbeddingsInputs;
      const texts = typeof text === 'string' ? [text] : text;
      const value = await this.post(base, 'v1/embeddings', { model, input: texts, encoding_format: 'float' }, error, quote);
      const answer = EmbeddingsAnswerSchema.safeParse(value);
      if (!answer.success) throw error(`the model server answered with an unexpected shape (${describeIssues(answer.error)})`);
      const rows = [...answer.data.data].sort((a, b) => a.index - b.index);
      if (rows.length !== texts.length) throw error(`the model server answered ${rows.length} embeddings for ${texts.length} texts`);
      const dim = rows[0]?.embedding.length ?? 0;
      if (rows.some((r) => r.embedding.length !== dim)) throw error('the model server answered embeddings of different dimensions');
      return { kind: 'embeddings', shape: [rows.length, dim], data: rows.map((r) => r.embedding) };
    }
    if (served.task === 'text-to-image') {
      const i = parsed.data as AiImageInputs;
      const body = {
        model, prompt: i.prompt, n: 1, response_format: 'b64_json',
        ...(i.width !== undefined || i.height !== undefined ? { size: `${i.width ?? 1024}x${i.height ?? 1024}` } : {}),
        ...(i.negative_prompt !== undefined ? { negative_prompt: i.negative_prompt } : {}),
        ...(i.num_steps !== undefined ? { num_inference_steps: i.num_steps } : {}),
        ...(i.guidance !== undefined ? { guidance_scale: i.guidance } : {}),
        ...(i.seed !== undefined ? { seed: i.seed } : {}),
      };
      const value = await this.post(base, 'v1/images/generations', body, error, quote);
      const answer = ImageAnswerSchema.safeParse(value);
      if (!answer.success) throw error(`the model server answered with an unexpected shape (${describeIssues(answer.error)})`);
      const bytes = Buffer.from(answer.data.data[0]!.b64_json, 'base64');
      if (bytes.byteLength === 0) throw error('the model server answered an empty image');
      return { kind: 'image', body: toArrayBuffer(bytes) };
    }

    const inputs = parsed.data as AiInputs;
    const chat = inputs.messages !== undefined;
    const target: AiCallTarget = { chat, error, quote };
    const { messages, prompt, stream, max_tokens, tools, functions: _functions, ...sampling } = inputs;
    const openAiTools = toOpenAiTools(tools);
    if (openAiTools && !chat) throw error('5006: tools need messages (chat), not prompt');
    if (openAiTools && stream === true) throw error('tools with stream: true are not supported here; call without stream');
    const body = {
      model,
      ...(chat ? { messages } : { prompt }),
      stream: stream === true,
      ...(stream === true ? { stream_options: { include_usage: true } } : {}),
      max_tokens: max_tokens ?? DEFAULT_MAX_TOKENS,
      ...(openAiTools ? { tools: openAiTools, tool_choice: 'auto' } : {}),
      ...sampling,
    };
    const upstream: Upstream = { abort: new AbortController() };
    this.pending.add(upstream);
    let res: Response;
    try {
      res = await fetch(new URL(chat ? 'v1/chat/completions' : 'v1/completions', base), {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: stream ? 'text/event-stream' : 'application/json' },
        body: JSON.stringify(body),
        signal: upstream.abort.signal,
        redirect: 'error',
      });
    } catch (err) {
      this.pending.delete(upstream);
      if (upstream.abort.signal.aborted) throw target.error('cancelled: the request ended');
      throw target.error(`could not reach the model server (${networkCode(err)})`, err);
    }
    try {
      if (res.status < 200 || res.status > 299) {
        const text = await this.readText(res, target).catch(() => '');
        let detail = '';
        try { detail = errorMessageOf(JSON.parse(text)) ?? ''; } catch { /* not JSON */ }
        throw target.error(`the model server answered ${res.status}${detail ? `: ${quote(detail)}` : ''}`);
      }
      if (stream === true) {
        if (!res.body) throw target.error(`the model server answered ${res.status} with no body`);
        if (this.closed) throw target.error('cancelled: the request ended');
        const s = new AiStream(target, res.body.getReader());
        s.abort.signal.addEventListener('abort', () => upstream.abort.abort(), { once: true });
        const handle = this.nextHandle++;
        this.streams.set(handle, s);
        return { kind: 'stream', handle };
      }
      const text = await this.readText(res, target);
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        throw target.error(`the model server answered ${res.status} with a body that is not JSON`);
      }
      const answer = (chat ? ChatAnswerSchema : CompletionAnswerSchema).safeParse(value);
      if (!answer.success) throw target.error(`the model server answered ${res.status} with an unexpected shape (${describeIssues(answer.error)})`);
      const first = answer.data.choices[0]!;
      const response = ('message' in first ? first.message.content : (first as { text: string }).text) ?? '';
      const usage = answer.data.usage ?? undefined;
      const calls = 'message' in first ? first.message.tool_calls ?? [] : [];
      return {
        kind: 'whole', response,
        ...(usage ? { usage } : {}),
        ...(calls.length > 0 ? { tool_calls: calls.map(workersToolCall) } : {}),
      };
    } catch (err) {
      const cancelled = upstream.abort.signal.aborted;
      upstream.abort.abort();
      if (err instanceof AiError) throw err;
      throw target.error(cancelled ? 'cancelled: the request ended' : `reading the model server's answer failed (${networkCode(err)})`, err);
    } finally {
      this.pending.delete(upstream);
    }
  }

  /** POSTs JSON to the server and returns its JSON answer (a non-2xx answer is an AiError quoting its message). */
  private async post(
    base: URL, path: string, body: unknown, error: AiCallTarget['error'], quote: AiCallTarget['quote'],
  ): Promise<unknown> {
    const target: AiCallTarget = { chat: false, error, quote };
    const upstream: Upstream = { abort: new AbortController() };
    this.pending.add(upstream);
    try {
      let res: Response;
      try {
        res = await fetch(new URL(path, base), {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json' },
          body: JSON.stringify(body),
          signal: upstream.abort.signal,
          redirect: 'error',
        });
      } catch (err) {
        if (upstream.abort.signal.aborted) throw error('cancelled: the request ended');
        throw error(`could not reach the model server (${networkCode(err)})`, err);
      }
      const text = await this.readText(res, target);
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        if (res.status < 200 || res.status > 299) throw error(`the model server answered ${res.status}`);
        throw error(`the model server answered ${res.status} with a body that is not JSON`);
      }
      if (res.status < 200 || res.status > 299) {
        const detail = errorMessageOf(value);
        throw error(`the model server answered ${res.status}${detail ? `: ${quote(detail)}` : ''}`);
      }
      return value;
    } catch (err) {
      const cancelled = upstream.abort.signal.aborted;
      upstream.abort.abort();
      if (err instanceof AiError) throw err;
      throw error(cancelled ? 'cancelled: the request ended' : `reading the model server's answer failed (${networkCode(err)})`, err);
    } finally {
      this.pending.delete(upstream);
    }
  }

  private async readText(res: Response, target: AiCallTarget): Promise<string> {
    const declared = Number(res.headers.get('content-length') ?? '0');
    if (declared > MAX_AI_BYTES) throw target.error(`the model server's answer of ${declared} bytes is over the ${MAX_AI_BYTES}-byte limit`);
    const chunks: Uint8Array[] = [];
    let size = 0;
    if (res.body) {
      for await (const chunk of res.body) {
        size += chunk.byteLength;
        if (size > MAX_AI_BYTES) throw target.error(`the model server's answer is over the ${MAX_AI_BYTES}-byte limit`);
        chunks.push(chunk);
      }
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  /** The next bytes of a streamed answer (Cloudflare SSE), or null at its end (the handle is then gone). */
  async read(handle: number): Promise<ArrayBuffer | null> {
    const s = this.streams.get(handle);
    if (!s) throw new AiError(`ai stream ${handle} is closed (cancelled, or its request ended)`);
    try {
      const chunk = await s.read();
      if (chunk !== null) return toArrayBuffer(chunk);
      this.streams.delete(handle);
      if (!s.drained) {
        this.pending.add(s);
        s.drain(() => this.pending.delete(s));
      }
      return null;
    } catch (err) {
      const cancelled = s.abort.signal.aborted;
      this.streams.delete(handle);
      s.close();
      if (err instanceof AiError) throw err;
      throw s.target.error(cancelled ? 'the stream was cancelled' : `reading the model server's stream failed (${networkCode(err)})`, err);
    }
  }

  /** The worker cancelled the stream: the upstream request is aborted. */
  cancel(handle: number): void {
    const s = this.streams.get(handle);
    if (!s) return;
    this.streams.delete(handle);
    s.close();
  }

  /** Aborts every call and stream under way (the request ended, or the isolate is gone). */
  closeAll(final = false): void {
    if (final) this.closed = true;
    if (this.streams.size === 0 && this.pending.size === 0) return; // every request pays this check
    for (const s of this.streams.values()) s.close();
    this.streams.clear();
    for (const u of this.pending) u.abort.abort();
    this.pending.clear();
  }
}
