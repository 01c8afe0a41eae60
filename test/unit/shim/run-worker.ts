import type { EgressPolicy, Limits } from '../../../common/api/index.js';
import type { DispatchRequest, DispatchResponse, WorkerEnv } from '../../../node-agent/abi/bridge.js';
import { hostBindings } from '../../../node-agent/bindings/host-bindings.js';
import { IsolatePool } from '../../../node-agent/isolate/pool.js';
import { WorkerIsolate, type WorkerDefinition } from '../../../node-agent/isolate/worker-isolate.js';
import { SocketRegistry, type HostSocket } from '../../../node-agent/sockets/sockets.js';

// Runs worker code in real isolates made from the shim snapshot, through the same host
// classes the agent uses (IsolatePool, WorkerIsolate, host callbacks).

/** Generous CPU budget: the first request in a fresh isolate compiles the shim lazily, and CI machines are slow. */
const TEST_LIMITS: Limits = { cpuMsPerRequest: 2000, memoryMiB: 128, subrequests: 50, wallMsPerRequest: 30_000 };

let pool: IsolatePool | undefined;

async function sharedPool(): Promise<IsolatePool> {
  if (!pool) {
    pool = new IsolatePool({ size: 1, defaultMemoryMiB: 128 });
    await pool.start();
  }
  return pool;
}

export interface LogLine {
  level: string;
  message: string;
}

export interface RequestSpec {
  url?: string;
  method?: string;
  headers?: [string, string][];
  /** The whole body, passed in one piece. */
  body?: string | Uint8Array;
  /** A streamed body: each chunk is pushed separately, then the end. */
  chunks?: (string | Uint8Array)[];
}

export interface WorkerReply {
  status: number;
  statusText: string;
  headers: [string, string][];
  /** How the isolate handed the body over. */
  bodyKind: 'none' | 'whole' | 'stream';
  /** The pieces as pulled (one piece for a whole body). */
  chunks: Uint8Array[];
  text: string;
}

export interface LoadOptions {
  name?: string;
  limits?: Partial<Limits>;
  env?: Record<string, string>;
  /** ai bindings: name -> { model, url of an OpenAI-compatible server }. */
  ai?: WorkerEnv['ai'];
  /** WebSocket message size limit (SocketRegistry's). */
  maxMessageBytes?: number;
  /** The worker's egress policy (default: DEFAULT_EGRESS_POLICY, no loopback). */
  egress?: EgressPolicy;
}

export const bytes = (b: string | Uint8Array): Uint8Array => (typeof b === 'string' ? new TextEncoder().encode(b) : b);
const arrayBuffer = (b: Uint8Array): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;

export class TestWorker {
  /** Socket events run one at a time, each once no request is in flight (as WorkerHost runs them). */
  private events: Promise<void> = Promise.resolve();
  /** Errors socket events ended with (limits). */
  readonly eventErrors: string[] = [];

  private constructor(readonly isolate: WorkerIsolate, readonly logs: LogLine[], readonly disposals: string[], readonly sockets: SocketRegistry) {
    isolate.setSocketOwner({
      socketEvent: (iso, socketId, event) => {
        this.events = this.events.then(async () => {
          while (iso.busy && !iso.dead) await new Promise((r) => setTimeout(r, 1));
          await iso.deliver(socketId, event).catch((err: unknown) => { this.eventErrors.push(err instanceof Error ? err.message : String(err)); });
        });
      },
    });
  }

  /** The client end a 101 response handed out (DispatchResponse.webSocket). */
  socket(id: number | undefined): HostSocket {
    const s = id === undefined ? undefined : this.sockets.get(id);
    if (!s) throw new Error(`no socket ${String(id)} in the registry`);
    return s;
  }

  /** Resolves once every socket event queued so far has run. */
  async idle(): Promise<void> {
    for (let seen: Promise<void> | undefined; seen !== this.events;) {
      seen = this.events;
      await seen;
    }
  }

  static async load(source: string, opts: LoadOptions = {}): Promise<TestWorker> {
    const p = await sharedPool();
    const name = opts.name ?? 'test-worker';
    const def: WorkerDefinition = {
      key: `test/${name}`, name, source, digest: 'sha256:test',
      limits: { ...TEST_LIMITS, ...opts.limits }, env: { text: opts.env ?? {}, ...(opts.ai ? { ai: opts.ai } : {}) },
      ...(opts.egress ? { egress: opts.egress } : {}),
    };
    const logs: LogLine[] = [];
    const disposals: string[] = [];
    const sockets = new SocketRegistry(opts.maxMessageBytes === undefined ? {} : { maxMessageBytes: opts.maxMessageBytes });
    const isolate = await WorkerIsolate.load(def, p.take(def.limits.memoryMiB), {
      onLog: (_worker, level, message) => logs.push({ level, message }),
      onDispose: (_worker, reason) => disposals.push(reason),
      sockets,
      bindings: hostBindings(),
    });
    return new TestWorker(isolate, logs, disposals, sockets);
  }

  /** Starts a request; with `chunks`, pushes them all (and the end) right after dispatching. */
  async start(spec: RequestSpec = {}, manualBody = false): Promise<{ id: number; response: DispatchResponse }> {
    const streamed = manualBody || spec.chunks !== undefined;
    const req: DispatchRequest = {
      url: spec.url ?? 'http://example.com/',
      method: spec.method ?? 'GET',
      headers: spec.headers ?? [],
      body: streamed ? 'stream' : spec.body === undefined ? null : arrayBuffer(bytes(spec.body)),
    };
    const { id, response } = this.isolate.begin(req);
    if (spec.chunks) {
      for (const c of spec.chunks) this.isolate.pushBody(id, bytes(c));
      this.isolate.pushBody(id, null);
    }
    return { id, response: await response };
  }

  async collect(id: number, response: DispatchResponse): Promise<WorkerReply> {
    const chunks: Uint8Array[] = [];
    let bodyKind: WorkerReply['bodyKind'] = 'none';
    if (response.body === 'stream') {
      bodyKind = 'stream';
      for (let c = await this.isolate.pullBody(id); c !== null; c = await this.isolate.pullBody(id)) chunks.push(c);
    } else if (response.body !== null) {
      bodyKind = 'whole';
      chunks.push(new Uint8Array(response.body));
    }
    const text = new TextDecoder().decode(Buffer.concat(chunks));
    return { status: response.status, statusText: response.statusText, headers: response.headers, bodyKind, chunks, text };
  }

  /** A whole request: dispatch, read the body, settle ctx.waitUntil work. */
  async fetch(spec: RequestSpec = {}): Promise<WorkerReply> {
    const { id, response } = await this.start(spec);
    try {
      return await this.collect(id, response);
    } finally {
      await this.isolate.finish(id);
    }
  }

  dispose(): void {
    this.isolate.dispose('shutdown');
  }
}

/** Loads a worker, sends it one request, disposes of it. */
export async function runWorker(source: string, spec: RequestSpec = {}, opts: LoadOptions = {}): Promise<WorkerReply & { logs: LogLine[] }> {
  const w = await TestWorker.load(source, opts);
  try {
    const reply = await w.fetch(spec);
    return { ...reply, logs: w.logs };
  } finally {
    w.dispose();
  }
}

export interface ThrownError {
  /** err.name */
  name: string;
  message: string;
  /** err.constructor.name: TypeError, RangeError, DOMException, ... */
  type: string;
}

export class WorkerThrew extends Error {
  constructor(readonly thrown: ThrownError) {
    super(`the worker code threw ${thrown.type} (${thrown.name}): ${thrown.message}`);
  }
}

/**
 * Runs `body` (the body of an async function; it may use request, env, ctx) inside a
 * worker's fetch handler and returns what it returns, as JSON.
 */
export async function evaluate<T = unknown>(body: string, spec: RequestSpec = {}, opts: LoadOptions = {}): Promise<T> {
  const source = `export default {
  async fetch(request, env, ctx) {
    try {
      const value = await (async () => {\n${body}\n})();
      return new Response(JSON.stringify({ value: value === undefined ? null : value }));
    } catch (err) {
      return new Response(JSON.stringify({ error: { name: String(err?.name), message: String(err?.message), type: String(err?.constructor?.name) } }));
    }
  },
};`;
  const reply = await runWorker(source, spec, opts);
  const out = JSON.parse(reply.text) as { value?: T; error?: ThrownError };
  if (out.error) throw new WorkerThrew(out.error);
  return out.value as T;
}

/** Runs `body` like evaluate and returns the error it throws (fails if it throws none). */
export async function evaluateError(body: string): Promise<ThrownError> {
  try {
    const value = await evaluate(body);
    throw new Error(`expected the worker code to throw, but it returned ${JSON.stringify(value)}`);
  } catch (err) {
    if (err instanceof WorkerThrew) return err.thrown;
    throw err;
  }
}
