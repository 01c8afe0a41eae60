import { request as httpRequest } from 'node:http';
import { Agent, request as httpsRequest, type RequestOptions as RequestOptionsHttps } from 'node:https';
import { GROUP, VERSION } from '../../common/api/group.js';
import { EdgeError } from '../../common/errors.js';

// Raw JSON requests to the kube-apiserver for our own kinds. client-node's typed clients
// round-trip objects of known kinds through camelCase models; for custom resources we
// want the JSON exactly as the apiserver has it, and control over the patch content type.

export class KubeError extends EdgeError {
  constructor(readonly code: number, readonly reason: string, message: string) { super(message); }
}

export const isNotFound = (err: unknown) => err instanceof KubeError && err.code === 404;
export const isConflict = (err: unknown) => err instanceof KubeError && err.code === 409;

/** `apply`: server-side apply (the body is the applied configuration, JSON being YAML). */
export type PatchType = 'merge' | 'json' | 'apply';
const PATCH_CONTENT_TYPE: Record<PatchType, string> = {
  merge: 'application/merge-patch+json',
  json: 'application/json-patch+json',
  apply: 'application/apply-patch+yaml',
};

export interface RequestOptions {
  body?: unknown;
  query?: Record<string, string>;
  patch?: PatchType;
  /** Gives up (rejecting) when aborted. */
  signal?: AbortSignal;
  /** Default 30 s. */
  timeoutMs?: number;
}

/**
 * What reconcilers, status writes and Events need of the apiserver: one raw JSON request.
 * KubeClient is the real one; operator/runtime/fake/kube-api.ts keeps objects in memory.
 */
export interface KubeApi {
  request<T = unknown>(method: string, path: string, opts?: RequestOptions): Promise<T>;
}

/**
 * What KubeClient needs of a kubeconfig: the server, and the TLS options and headers of each
 * request. client-node's KubeConfig is one (it does every kind of authentication); the CLI
 * has a lighter one for the common kinds (cli/kubeconfig.ts), which spares it loading client-node.
 */
export interface KubeCredentials {
  getCurrentCluster(): { server: string } | null;
  applyToHTTPSOptions(opts: RequestOptionsHttps): Promise<void>;
}

export class KubeClient implements KubeApi {
  private readonly server: URL;
  private agent: Agent | undefined;

  constructor(readonly kc: KubeCredentials) {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('kubeconfig has no current cluster');
    this.server = new URL(cluster.server);
  }

  async request<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const url = new URL(this.server.href.replace(/\/$/, '') + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) url.searchParams.set(k, v);
    const reqOpts: RequestOptionsHttps = { method, headers: {} };
    // Credentials are applied per request: an in-cluster token file is rotated under us.
    await this.kc.applyToHTTPSOptions(reqOpts);
    const secure = url.protocol === 'https:';
    if (secure && !this.agent) {
      this.agent = new Agent({ keepAlive: true, maxSockets: 32, ca: reqOpts.ca, cert: reqOpts.cert, key: reqOpts.key, rejectUnauthorized: reqOpts.rejectUnauthorized, servername: reqOpts.servername });
    }
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const headers: Record<string, string> = { ...(reqOpts.headers as Record<string, string>), accept: 'application/json' };
    if (payload !== undefined) {
      headers['content-type'] = opts.patch ? PATCH_CONTENT_TYPE[opts.patch] : 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = (secure ? httpsRequest : httpRequest)(url, { method, headers, signal: opts.signal, ...(secure ? { agent: this.agent } : {}) }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      const timeoutMs = opts.timeoutMs ?? 30_000;
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path}: no answer from the apiserver in ${timeoutMs / 1000} s`)));
      req.on('error', (err) => reject(new Error(`${method} ${path}: ${err.message}`, { cause: err })));
      req.end(payload);
    });
    let json: unknown;
    try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
    if (status < 200 || status > 299) {
      const st = json as { reason?: string; message?: string } | undefined;
      throw new KubeError(status, st?.reason ?? String(status), `${method} ${path}: ${status} ${st?.message ?? text.slice(0, 500)}`);
    }
    return json as T;
  }
}

/** Path of one of our custom resources (or its collection when name is omitted). */
export function crPath(plural: string, namespace?: string, name?: string, sub?: 'status'): string {
  let p = `/apis/${GROUP}/${VERSION}`;
  if (namespace) p += `/namespaces/${namespace}`;
  p += `/${plural}`;
  if (name) p += `/${name}`;
  if (sub) p += `/${sub}`;
  return p;
}
