import type { NatsConnection } from 'nats';
import type { Logger } from '../../common/log.js';
import {
  encodeJson, LOGS_STREAM, logsStreamConfig, SUBJECTS, type LogLine,
} from '../../common/nats.js';
import { parseOrSkip, parseWorkerRef, type ObjectRef } from '../../common/keys.js';

// Workers' console output on NATS, for `edge logs`: every line a worker (or one of its
// actors) writes goes to `edge.logs.<namespace>.<name>` as a LogLine, and the EDGE_LOGS
// stream (memory, LOGS_MAX_AGE_MS) keeps the recent ones. Plain publishes: nothing on the
// request path waits for NATS. A worker that logs in a tight loop is rate limited per
// worker (a burst of BURST lines, then RATE_PER_S), and a line says how many were dropped.

/** Longest message published; the rest is cut (the agent's own JSON log keeps it whole). */
export const MAX_LOG_MESSAGE_BYTES = 16 * 1024;
const BURST = 500;
const RATE_PER_S = 200;

export interface ConsoleStreamOptions {
  nc: NatsConnection;
  region: string;
  node: string;
  log: Logger;
}

interface Bucket { tokens: number; at: number; dropped: number }

export class ConsoleStream {
  private readonly buckets = new Map<string, Bucket>();

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
    const ref = parseOrSkip(parseWorkerRef, worker);
    if (!ref) return;
    const now = Date.now();
    let b = this.buckets.get(worker);
    if (!b) { b = { tokens: BURST, at: now, dropped: 0 }; this.buckets.set(worker, b); }
    b.tokens = Math.min(BURST, b.tokens + ((now - b.at) * RATE_PER_S) / 1000);
    b.at = now;
    if (b.tokens < 1) { b.dropped++; return; }
    b.tokens--;
    if (b.dropped > 0) {
      const n = b.dropped;
      b.dropped = 0;
      this.publish(worker, ref, 'warn', `[edge] ${n} console line${n === 1 ? '' : 's'} dropped on ${this.opts.node} (over ${RATE_PER_S} lines/s)`);
    }
    this.publish(worker, ref, level, message);
  };

  private publish(worker: string, ref: ObjectRef, level: string, message: string): void {
    let text = message;
    if (text.length > MAX_LOG_MESSAGE_BYTES / 4 && Buffer.byteLength(text) > MAX_LOG_MESSAGE_BYTES) {
      const cut = Buffer.from(text).subarray(0, MAX_LOG_MESSAGE_BYTES).toString('utf8');
      text = `${cut}... (${Buffer.byteLength(text) - Buffer.byteLength(cut)} more bytes)`;
    }
    const line: LogLine = { ts: new Date().toISOString(), level, message: text, region: this.opts.region, node: this.opts.node, worker };
    try {
      this.opts.nc.publish(SUBJECTS.logs(ref.namespace, ref.name), encodeJson(line));
    } catch {
      // Closed or draining connection: the agent's own log still has the line.
    }
  }

  stop(): void { this.buckets.clear(); }
}
