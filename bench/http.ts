import { Agent, request } from 'node:http';

// Single timed HTTP/1.1 requests to 127.0.0.1, for body checks and first-request timings.

import type { IncomingHttpHeaders } from 'node:http';

export interface Reply { status: number; body: string; ms: number; headers: IncomingHttpHeaders }

export interface RequestSpec {
  port: number;
  host?: string;
  path?: string;
  method?: 'GET' | 'POST';
  body?: string;
  contentType?: string;
  timeoutMs?: number;
  /** A keep-alive agent reuses one warm connection; without one each request connects anew. */
  agent?: Agent;
}

/** Resolves with status, body and the client-side time from send to the last body byte. */
export function httpRequest(spec: RequestSpec): Promise<Reply> {
  return new Promise((resolveReply, reject) => {
    const headers: Record<string, string> = {};
    if (spec.host) headers.host = spec.host;
    if (spec.body !== undefined) {
      headers['content-type'] = spec.contentType ?? 'application/json';
      headers['content-length'] = String(Buffer.byteLength(spec.body));
    }
    const t0 = performance.now();
    const req = request({
      host: '127.0.0.1', port: spec.port, path: spec.path ?? '/', method: spec.method ?? 'GET', headers,
      agent: spec.agent ?? false, timeout: spec.timeoutMs ?? 10_000,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolveReply({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), ms: performance.now() - t0, headers: res.headers }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no response within ${spec.timeoutMs ?? 10_000} ms`)));
    req.on('error', reject);
    req.end(spec.body);
  });
}

export function keepAliveAgent(): Agent {
  return new Agent({ keepAlive: true, maxSockets: 1 });
}

/** True when GET url answers 200. */
export async function isOk(port: number, path: string): Promise<boolean> {
  try {
    const r = await httpRequest({ port, path, timeoutMs: 2000 });
    return r.status === 200;
  } catch { return false; }
}

/** Throws unless the reply is 200 with exactly `expected` as body. */
export function expectBody(what: string, r: Reply, expected: string): void {
  if (r.status !== 200 || r.body !== expected) {
    throw new Error(`${what}: expected 200 ${JSON.stringify(expected.slice(0, 200))}, got ${r.status} ${JSON.stringify(r.body.slice(0, 300))}`);
  }
}

export function percentile(sortedAsc: number[], p: number): number {
  if (sortedAsc.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sortedAsc.length) - 1;
  return sortedAsc[Math.min(sortedAsc.length - 1, Math.max(0, rank))] ?? NaN;
}

export interface Summary { n: number; p50: number; p99: number; min: number; max: number; mean: number }

export function summarize(values: number[]): Summary {
  const s = [...values].sort((a, b) => a - b);
  return {
    n: s.length, p50: percentile(s, 50), p99: percentile(s, 99),
    min: s[0] ?? NaN, max: s[s.length - 1] ?? NaN, mean: s.reduce((a, b) => a + b, 0) / (s.length || 1),
  };
}
