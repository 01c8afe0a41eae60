import type { NatsConnection } from 'nats';
import type { Logger } from '../../common/log.js';
import {
  encodeJson, LOGS_STREAM, logsStreamConfig, SUBJECTS, type LogLine,
} from '../../common/nats.js';
import { parseOrSkip, parseWorkerRef, type ObjectRef } from '../../common/keys.js';
import type { ServedRequest, WorkerException } from '../serving/http-front.js';

// Workers' console output on NATS, for `edge logs`: every line a worker (or one of its
// actors) writes goes to `edge.logs.<namespace>.<name>` as a LogLine, and the EDGE_LOGS
// stream (memory, LOGS_MAX_AGE_MS) keeps the recent ones. Plain publishes: nothing on the
// request path waits for NATS. A worker that logs in a tight loop is rate limited per
// worker (a burst of BURST lines, then RATE_PER_S), and a line says how many were dropped.
// Uncaught exceptions go the same way (kind `exception`, with the stack in the worker's
// source and the ray id); each request a worker served goes to its own subject
// (SUBJECTS.requests, kind `request`) under a bucket of its own, so a busy worker costs at
// most REQUEST_RATE_PER_S publishes a second and its requests never push its console lines out.

/** Longest message published; the rest is cut (the agent's own JSON log keeps it whole). */
export const MAX_LOG_MESSAGE_BYTES = 16 * 1024;
const BURST = 500;
const RATE_PER_S = 200;
const REQUEST_BURST = 200;
const REQUEST_RATE_PER_S = 100;
/** Longest request URL published. */
const MAX_URL_CHARS = 2048;

export interface ConsoleStreamOptions {
  nc: NatsConnection;
  region: string;
  node: string;
  log: Logger;
}

interface Bucket { tokens: number; at: number; dropped: number }

export class ConsoleStream {
  private readonly buckets = new Map<string, Bucket>();
  private readonly requestBuckets = new Map<string, Bucket>();

  constructor(private readonly opts: ConsoleStreamOptions) {}

  /** Creates the stream when missing (best effort: without it `edge logs -f` still works). */
  async start(): Promise<void> {
    try {
      const jsm = await this.opts.nc.jetstreamManager();
      try {
        await jsm.streams.info(LOGS_STREAM);
      } catch {
        await jsm.streams.add(logsStreamConfig()).catch(async (err: unknown) => {
          // Another agent created it at the same moment.
          await jsm.streams.info(LOGS_STREAM).catch(() => { throw err; });
        });
      }
    } catch (err) {
      this.opts.log.warn('no log stream: `edge logs` shows only lines that arrive while it runs', { stream: LOGS_STREAM, error: err });
    }
  }

  /** For Agent.consoleListeners: `worker` is its workerRef. */
  readonly listener = (worker: string, level: string, message: string): void => {
    const ref = this.admit(worker);
    if (ref) this.publish(worker, ref, level, message);
  };

  /** For WorkerServer.exceptionListeners. */
  readonly exceptionListener = (worker: string, e: WorkerException & { ray: string }): void => {
    const ref = this.admit(worker);
    if (ref) this.publish(worker, ref, 'error', e.message, { kind: 'exception', ray: e.ray, ...(e.stack ? { stack: cut(e.stack) } : {}) });
  };

  /** For WorkerServer.requestListeners. */
  readonly requestListener = (r: ServedRequest): void => {
    // The bucket first: past the rate (a busy worker) a request costs a map lookup, nothing more.
    const dropped = take(this.requestBuckets, r.worker, REQUEST_BURST, REQUEST_RATE_PER_S);
    if (dropped === undefined) return;
    const ref = parseOrSkip(parseWorkerRef, r.worker);
    if (!ref) return;
    const subject = SUBJECTS.requests(ref.namespace, ref.name);
    if (dropped > 0) this.send(subject, this.line(r.worker, 'warn', `[edge] ${dropped} request line${dropped === 1 ? '' : 's'} left out on ${this.opts.node} (over ${REQUEST_RATE_PER_S}/s)`));
    const url = r.url.length > MAX_URL_CHARS ? `${r.url.slice(0, MAX_URL_CHARS)}...` : r.url;
    this.send(subject, this.line(r.worker, r.status >= 500 ? 'error' : r.status >= 400 ? 'warn' : 'info', `${r.method} ${url} ${r.status}`, {
      kind: 'request', method: r.method, url, status: r.status, durationMs: round(r.durationMs),
      ...(r.cpuMs !== undefined ? { cpuMs: round(r.cpuMs) } : {}), ...(r.ray !== undefined ? { ray: r.ray } : {}),
    }));
  };

  /** The worker's ref when its console bucket has room (saying first how many lines were dropped), else undefined. */
  private admit(worker: string): ObjectRef | undefined {
    const ref = parseOrSkip(parseWorkerRef, worker);
    if (!ref) return undefined;
    const dropped = take(this.buckets, worker, BURST, RATE_PER_S);
    if (dropped === undefined) return undefined;
    if (dropped > 0) this.publish(worker, ref, 'warn', `[edge] ${dropped} console line${dropped === 1 ? '' : 's'} dropped on ${this.opts.node} (over ${RATE_PER_S} lines/s)`);
    return ref;
  }

  private line(worker: string, level: string, message: string, extra: Partial<LogLine> = {}): LogLine {
    return { ts: new Date().toISOString(), level, message, region: this.opts.region, node: this.opts.node, worker, ...extra };
  }

  private send(subject: string, line: LogLine): void {
    try {
      this.opts.nc.publish(subject, encodeJson(line));
    } catch {
      // Closed or draining connection: the agent's own log still has the line.
    }
  }

  private publish(worker: string, ref: ObjectRef, level: string, message: string, extra: Partial<LogLine> = {}): void {
    this.send(SUBJECTS.logs(ref.namespace, ref.name), this.line(worker, level, cut(message), extra));
  }

  stop(): void { this.buckets.clear(); this.requestBuckets.clear(); }
}

const round = (ms: number) => Math.round(ms * 100) / 100;

/** At most MAX_LOG_MESSAGE_BYTES of `text`, saying how much was cut. */
function cut(text: string): string {
  if (text.length <= MAX_LOG_MESSAGE_BYTES / 4 || Buffer.byteLength(text) <= MAX_LOG_MESSAGE_BYTES) return text;
  const kept = Buffer.from(text).subarray(0, MAX_LOG_MESSAGE_BYTES).toString('utf8');
  return `${kept}... (${Buffer.byteLength(text) - Buffer.byteLength(kept)} more bytes)`;
}

/**
 * Takes a token from `key`'s bucket: undefined when it is empty (the line is dropped and
 * counted), else how many were dropped since the last line that went (and resets that count).
 */
function take(buckets: Map<string, Bucket>, key: string, burst: number, ratePerS: number): number | undefined {
  const now = Date.now();
  let b = buckets.get(key);
  if (!b) { b = { tokens: burst, at: now, dropped: 0 }; buckets.set(key, b); }
  b.tokens = Math.min(burst, b.tokens + ((now - b.at) * ratePerS) / 1000);
  b.at = now;
  if (b.tokens < 1) { b.dropped++; return undefined; }
  b.tokens--;
  const n = b.dropped;
  b.dropped = 0;
  return n;
}
