import { lookup } from 'node:dns/promises';
import { once } from 'node:events';
import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { PassThrough, pipeline, type Readable } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import { EgressDeniedError, type EgressRules, type ResolvedAddress } from '../../common/egress.js';
import { EdgeError } from '../../common/errors.js';
import type { SubrequestInit, SubrequestResult } from '../abi/bridge.js';
import { SUBREQUEST_WHOLE_BODY_BYTES } from '../abi/bridge.js';

// The host side of one isolate's fetch(): every connection goes to an address the worker's
// egress policy allows (common/egress.ts), resolved once and connected to as an address,
// so a name cannot resolve to something else between the check and the connect (DNS
// rebinding); redirects are followed here, hop by hop, each hop checked the same way.
// Bodies stream both ways with backpressure: what the host holds for a subrequest is a
// window (a stream's buffer), never a whole body over SUBREQUEST_WHOLE_BODY_BYTES.
//
// The connection pools are the isolate's own: a pooled connection was checked against
// this worker's policy, and no other worker's request may reuse it.

/** Looks a host name up: every address, in the resolver's order. */
export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

export const systemResolver: Resolver = async (hostname) =>
  (await lookup(hostname, { all: true, verbatim: true })).map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));

export class SubrequestError extends EdgeError {}

/** Workers' limit on redirects one fetch follows. */
const MAX_REDIRECTS = 20;
/** Subrequests with a connection or body open at once in one isolate. */
export const MAX_OPEN_SUBREQUESTS = 100;
/** What a stream buffers on the host before it waits for the isolate (each way), beside the socket's own buffers. */
const WINDOW_BYTES = 256 * 1024;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const NULL_BODY = new Set([101, 204, 205, 304]);
/** Request headers the host writes itself (or that only make sense hop by hop). */
const HOP_HEADERS = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection', 'content-length']);
/** Dropped when a redirect leaves the origin, as fetch does. */
const CREDENTIAL_HEADERS = new Set(['authorization', 'cookie', 'proxy-authorization']);
const BODY_HEADERS = new Set(['content-type', 'content-encoding', 'content-language', 'content-location']);

const toArrayBuffer = (b: Uint8Array): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** One subrequest under way. */
interface Open {
  readonly abort: AbortController;
  /** A streamed request body: fetchWrite feeds it, the connection drains it. */
  sink?: PassThrough;
  /** A whole request body the host holds until the request is sent. */
  held: number;
  /** A streamed response body. */
  body?: Readable;
  reader?: AsyncIterator<Buffer>;
  /** Reads are one at a time. */
  reading?: Promise<unknown>;
}

export interface SubrequestOptions {
  /** The worker, for messages. */
  worker: string;
  rules: EgressRules;
  resolve?: Resolver;
}

const KEEP_ALIVE = { keepAlive: true, maxFreeSockets: 4, timeout: 30_000 } as const;

/** The subrequests of one isolate. */
export class Subrequests {
  private readonly open = new Map<number, Open>();
  // Made at the first fetch(): most isolates (a dynamic worker's, a cold start's) never
  // fetch, and two agents cost ~0.05 ms of each isolate's start.
  private httpAgent: HttpAgent | undefined;
  private httpsAgent: HttpsAgent | undefined;
  private readonly resolve: Resolver;
  private closed = false;

  constructor(private readonly opts: SubrequestOptions) {
    this.resolve = opts.resolve ?? systemResolver;
  }

  /** Bytes the host holds for this isolate's subrequests now (bodies and stream windows). */
  heldBytes(): number {
    let n = 0;
    for (const o of this.open.values()) n += o.held + (o.sink?.writableLength ?? 0) + (o.sink?.readableLength ?? 0) + (o.body?.readableLength ?? 0);
    return n;
  }

  get size(): number { return this.open.size; }

  /**
   * Starts a subrequest; `count` (the request's subrequest budget) is called once it is
   * known to be well formed. Registers it at once, before anything is awaited, so the
   * shim's first fetchWrite finds it.
   */
  start(init: SubrequestInit, count: () => void): Promise<SubrequestResult> {
    let url: URL;
    try {
      url = new URL(init.url);
    } catch {
      return Promise.reject(new SubrequestError(`fetch: ${init.url} is not a URL`));
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      return Promise.reject(new SubrequestError(`fetch: only http: and https: URLs can be fetched, not ${url.protocol}`));
    }
    if (this.closed) return Promise.reject(new SubrequestError('fetch: the request has ended'));
    if (this.open.has(init.id)) return Promise.reject(new TypeError(`fetch: subrequest ${init.id} is already under way`));
    if (this.open.size >= MAX_OPEN_SUBREQUESTS) {
      return Promise.reject(new SubrequestError(`fetch: ${MAX_OPEN_SUBREQUESTS} subrequests are already open in this isolate; read or cancel their bodies first`));
    }
    try {
      count();
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const o: Open = { abort: new AbortController(), held: init.body instanceof ArrayBuffer ? init.body.byteLength : 0 };
    if (init.body === 1) o.sink = new PassThrough({ highWaterMark: WINDOW_BYTES });
    this.open.set(init.id, o);
    return this.run(init.id, o, init, url).catch((err: unknown) => {
      this.drop(init.id, o);
      throw err;
    });
  }

  private async run(id: number, o: Open, init: SubrequestInit, first: URL): Promise<SubrequestResult> {
    let url = first;
    let method = init.method.toUpperCase() === 'HEAD' ? 'HEAD' : init.method;
    let headers = init.headers.filter(([k]) => !HOP_HEADERS.has(k.toLowerCase()));
    let body: Buffer | PassThrough | null = init.body instanceof ArrayBuffer ? Buffer.from(init.body) : o.sink ?? null;
    for (let redirects = 0; ; redirects++) {
      const res = await this.hop(o, url, method, headers, body);
      const status = res.statusCode ?? 502;
      const location = res.headers.location;
      if (REDIRECTS.has(status) && location !== undefined && init.redirect !== 'manual') {
        res.destroy();
        if (init.redirect === 'error') throw new SubrequestError(`fetch ${url.href}: redirected (${status}) and the request's redirect mode is "error"`);
        if (redirects >= MAX_REDIRECTS) throw new SubrequestError(`fetch ${first.href}: more than ${MAX_REDIRECTS} redirects`);
        let next: URL;
        try {
          next = new URL(location, url);
        } catch {
          throw new SubrequestError(`fetch ${url.href}: redirected to ${JSON.stringify(location.slice(0, 200))}, which is not a URL`);
        }
        if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new SubrequestError(`fetch ${url.href}: redirected to a ${next.protocol} URL`);
        if ((status === 303 && method !== 'HEAD') || ((status === 301 || status === 302) && method === 'POST')) {
          method = 'GET';
          headers = headers.filter(([k]) => !BODY_HEADERS.has(k.toLowerCase()));
          if (body instanceof PassThrough) body.destroy();
          body = null;
          o.held = 0;
        } else if (body instanceof PassThrough) {
          throw new SubrequestError(`fetch ${url.href}: cannot follow a ${status} redirect with a streamed request body (it cannot be sent twice)`);
        }
        if (next.origin !== url.origin) headers = headers.filter(([k]) => !CREDENTIAL_HEADERS.has(k.toLowerCase()));
        url = next;
        continue;
      }
      o.held = 0;
      return this.answer(id, o, res, url, redirects > 0, method);
    }
  }

  /** One request/response exchange with an address the policy allows. */
  private async hop(o: Open, url: URL, method: string, headers: [string, string][], body: Buffer | PassThrough | null): Promise<IncomingMessage> {
    const tls = url.protocol === 'https:';
    const port = Number(url.port) || (tls ? 443 : 80);
    let dest: ResolvedAddress;
    try {
      dest = await this.opts.rules.pick(url.hostname, port, this.resolve);
    } catch (err) {
      if (err instanceof EgressDeniedError) throw err;
      throw new SubrequestError(`fetch ${url.href}: cannot resolve ${url.hostname} (${(err as { code?: string }).code ?? message(err)})`, { cause: err });
    }
    if (o.abort.signal.aborted) throw new SubrequestError(`fetch ${url.href}: cancelled`);
    const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const out: [string, string][] = [['host', url.host], ...headers];
    if (body instanceof Buffer) out.push(['content-length', String(body.byteLength)]);
    else if (body === null && method !== 'GET' && method !== 'HEAD') out.push(['content-length', '0']);
    return new Promise<IncomingMessage>((resolve, reject) => {
      let req: ClientRequest;
      try {
        req = (tls ? httpsRequest : httpRequest)({
          host: dest.address, family: dest.family, port, method, path: `${url.pathname}${url.search}`,
          headers: out.flat(), agent: tls ? (this.httpsAgent ??= new HttpsAgent(KEEP_ALIVE)) : (this.httpAgent ??= new HttpAgent(KEEP_ALIVE)), signal: o.abort.signal,
          // The certificate is checked against the name the worker asked for, never the address.
          ...(tls ? { servername: isIP(hostname) ? '' : hostname } : {}),
        }, resolve);
      } catch (err) {
        reject(new SubrequestError(`fetch ${url.href}: ${message(err)}`, { cause: err }));
        return;
      }
      req.on('error', (err) => reject(new SubrequestError(`fetch ${url.href}: ${o.abort.signal.aborted ? 'cancelled' : message(err)}`, { cause: err })));
      if (body instanceof PassThrough) {
        body.pipe(req);
        body.once('error', (err) => req.destroy(err));
      } else {
        req.end(body ?? undefined);
      }
    });
  }

  private async answer(id: number, o: Open, res: IncomingMessage, url: URL, redirected: boolean, method: string): Promise<SubrequestResult> {
    const status = res.statusCode ?? 502;
    const headers: [string, string][] = [];
    for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) headers.push([res.rawHeaders[i]!.toLowerCase(), res.rawHeaders[i + 1]!]);
    const head = { status, statusText: res.statusMessage ?? '', headers, url: url.href, redirected };
    if (method === 'HEAD' || NULL_BODY.has(status)) {
      res.resume();
      this.drop(id, o);
      return { ...head, body: null };
    }
    const encoding = String(res.headers['content-encoding'] ?? '').trim().toLowerCase();
    const decoder = encoding === 'gzip' || encoding === 'x-gzip' ? createGunzip() : encoding === 'deflate' ? createInflate() : encoding === 'br' ? createBrotliDecompress() : undefined;
    const declared = res.headers['content-length'] === undefined ? NaN : Number(res.headers['content-length']);
    if (!decoder && Number.isSafeInteger(declared) && declared <= SUBREQUEST_WHOLE_BODY_BYTES) {
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const c of res) {
        size += (c as Buffer).byteLength;
        if (size > declared) throw new SubrequestError(`fetch ${url.href}: the response body is longer than its content-length`);
        chunks.push(c as Buffer);
      }
      this.drop(id, o);
      return { ...head, body: toArrayBuffer(Buffer.concat(chunks)) };
    }
    // As fetch does: a compressed body reaches the worker decoded (its headers as sent).
    // The window is what the host holds ahead of the worker's reads: each read takes all
    // of it, so a fast reader pays few crossings and a slow one stops the server.
    const window = new PassThrough({ highWaterMark: WINDOW_BYTES });
    o.body = decoder ? pipeline(res, decoder, window, () => {}) : pipeline(res, window, () => {});
    o.reader = o.body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    return { ...head, body: 'stream' };
  }

  /** The next chunk of a streamed request body (null: its end). Settles when the host can take more. */
  async write(id: number, chunk: ArrayBuffer | null): Promise<void> {
    const o = this.open.get(id);
    const sink = o?.sink;
    if (!o || !sink) throw new SubrequestError(`fetch: subrequest ${id} has no request body open`);
    if (sink.destroyed || sink.writableEnded) throw new SubrequestError(`fetch: subrequest ${id}'s request body is closed`);
    if (chunk === null) { sink.end(); return; }
    if (sink.write(Buffer.from(chunk))) return;
    const gone = new AbortController();
    const onClose = () => gone.abort();
    sink.once('close', onClose);
    try {
      await once(sink, 'drain', { signal: gone.signal });
    } catch (err) {
      throw new SubrequestError(`fetch: subrequest ${id}'s request body was closed`, { cause: err });
    } finally {
      sink.off('close', onClose);
    }
  }

  /** The next chunk of a streamed response body, or null at its end (the subrequest is then forgotten). */
  read(id: number): Promise<ArrayBuffer | null> {
    const o = this.open.get(id);
    const reader = o?.reader;
    if (!o || !reader) return Promise.reject(new SubrequestError(`fetch: subrequest ${id} has no response body open (finished, cancelled, or its request ended)`));
    const next = (o.reading ?? Promise.resolve()).then(async () => {
      if (this.open.get(id) !== o) throw new SubrequestError(`fetch: subrequest ${id} was cancelled`);
      let r: IteratorResult<Buffer>;
      try {
        r = await reader.next();
      } catch (err) {
        this.drop(id, o);
        throw new SubrequestError(o.abort.signal.aborted ? 'cancelled' : message(err), { cause: err });
      }
      if (r.done) { this.drop(id, o); return null; }
      return toArrayBuffer(r.value);
    });
    o.reading = next.catch(() => {});
    return next;
  }

  /** The worker is done with it: the connection is dropped (never reused half-read). */
  cancel(id: number): void {
    const o = this.open.get(id);
    if (o) this.drop(id, o);
  }

  private drop(id: number, o: Open): void {
    if (this.open.get(id) === o) this.open.delete(id);
    o.abort.abort();
    o.sink?.destroy();
    o.body?.destroy();
    o.held = 0;
  }

  /** The request ended (or, `final`, the isolate is gone): nothing it started outlives it. */
  closeAll(final = false): void {
    if (final) {
      this.closed = true;
      this.httpAgent?.destroy();
      this.httpsAgent?.destroy();
    }
    if (this.open.size === 0) return;
    for (const [id, o] of [...this.open]) this.drop(id, o);
  }
}
