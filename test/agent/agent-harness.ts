import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createLogger, type LogFields } from '../../common/log.js';
import { hostBindings, type HostBindingsOptions } from '../../node-agent/bindings/host-bindings.js';
import { WorkerServer, type WorkerServerOptions } from '../../node-agent/serving/worker-server.js';
import { DirectorySource } from '../../node-agent/control/desired-state.js';

// An in-process agent serving a temp directory of manifests, for tests that need to look
// inside (logs, metrics) while sending real HTTP to it on loopback.

export interface WorkerSpecInput {
  name: string;
  source: string;
  /** metadata.namespace (default: none, which directory mode reads as "default"). */
  namespace?: string;
  host?: string;
  pathPrefix?: string;
  limits?: Partial<{ cpuMsPerRequest: number; memoryMiB: number; subrequests: number; wallMsPerRequest: number }>;
  minWarmIsolates?: number;
  vars?: Record<string, string>;
  compatibilityFlags?: string[];
}

export function workerManifest(w: WorkerSpecInput): string {
  return stringify({
    apiVersion: 'edge.isolates.dev/v1alpha1',
    kind: 'EdgeWorker',
    metadata: { name: w.name, ...(w.namespace ? { namespace: w.namespace } : {}) },
    spec: {
      routes: [{ host: w.host ?? `${w.name}.test`, pathPrefix: w.pathPrefix ?? '/' }],
      placement: { minWarmIsolates: w.minWarmIsolates ?? 1 },
      limits: { cpuMsPerRequest: 50, memoryMiB: 64, subrequests: 5, wallMsPerRequest: 5000, ...w.limits },
      ...(w.vars ? { bindings: { vars: w.vars } } : {}),
      ...(w.compatibilityFlags ? { compatibilityFlags: w.compatibilityFlags } : {}),
      source: { inline: w.source },
    },
  });
}

export interface TestAgent {
  agent: WorkerServer;
  url: string;
  port: number;
  dir: string;
  logs: LogFields[];
  write(file: string, text: string): void;
  get(host: string, path?: string, init?: RequestInit): Promise<Response>;
  stop(): Promise<void>;
}

export async function startTestAgent(
  workers: WorkerSpecInput[],
  opts: Pick<WorkerServerOptions, 'maxBodyBytes' | 'maxIsolatesPerWorker' | 'maxQueuedPerWorker' | 'maxWebSocketMessageBytes' | 'slowClients' | 'trustedProxies' | 'colo' | 'devErrorPages'> & {
    /** Allowances past the default egress policy (as `edge agent --egress-allow`): a local upstream a worker fetches. */
    egressAllow?: string[];
    /** How workers' fetch() looks names up (default: the system's). */
    resolve?: HostBindingsOptions['resolve'];
  } = {},
): Promise<TestAgent> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-agent-test-'));
  for (const w of workers) writeFileSync(join(dir, `${w.name}.yaml`), workerManifest(w));
  const logs: LogFields[] = [];
  const log = createLogger({}, (line) => { logs.push(JSON.parse(line) as LogFields); }, 'debug');
  const { egressAllow, resolve, ...serverOpts } = opts;
  const bindings = hostBindings({ ...(egressAllow ? { egressAllow } : {}), ...(resolve ? { resolve } : {}) });
  const agent = new WorkerServer({ source: new DirectorySource(dir, log), log, bindings, poolSize: 2, ...serverOpts });
  const port = await agent.start(0);
  const url = `http://127.0.0.1:${port}`;
  return {
    agent, url, port, dir, logs,
    write: (file, text) => writeFileSync(join(dir, file), text),
    get: (host, path = '/', init = {}) => send(port, host, path, init),
    stop: async () => { await agent.stop(); rmSync(dir, { recursive: true, force: true }); },
  };
}

/**
 * An HTTP request with an explicit Host header (fetch() does not let a caller set one),
 * answered as a fetch Response so tests read it the usual way.
 */
export function send(port: number, host: string, path: string, init: RequestInit = {}): Promise<Response> {
  return new Promise((resolveRes, reject) => {
    const headers: Record<string, string> = { ...(init.headers as Record<string, string> | undefined), host };
    const req = httpRequest({ host: '127.0.0.1', port, path, method: init.method ?? 'GET', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const h = new Headers();
        for (let i = 0; i < res.rawHeaders.length; i += 2) h.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!);
        const status = res.statusCode ?? 0;
        const nullBody = status === 204 || status === 304 || (init.method ?? 'GET') === 'HEAD';
        resolveRes(new Response(nullBody ? null : Buffer.concat(chunks), { status, statusText: res.statusMessage, headers: h }));
      });
    });
    req.on('error', reject);
    const body = init.body;
    if (body === undefined || body === null) req.end();
    else if (body instanceof ReadableStream) Readable.fromWeb(body as WebReadableStream).pipe(req);
    else if (typeof body === 'string' || body instanceof Uint8Array) req.end(body);
    else reject(new Error('send(): body must be a string, Uint8Array or ReadableStream'));
  });
}
