import { createHash, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import { Agent as HttpAgent, createServer, request as httpRequest, type ClientRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../../common/log.js';
import { errorMessage } from '../../common/log.js';
import { actorInstanceKey, parseActorInstanceKey, parseOrSkip } from '../../common/keys.js';
import { ActorExceptionError, actorException, HeaderListSchema } from '../abi/bridge.js';
import {
  askedHeartbeat, CallOutcomeUnknownError, ForeignActorIdError, HEARTBEAT_HEADER, heartbeatFor, MISDIRECTED, NotHereError, OUTCOME_HEADER, OUTCOME_UNKNOWN, PEER_PATH,
  type PeerForwardOptions, type PeerHandler, type PeerRequest, type PeerResponse,
} from './protocol.js';
import { EdgeError } from '../../common/errors.js';
import type { BodyStream } from '../../common/body-stream.js';
import { FRAMED, FRAMED_HEADER, STREAMED, receiveFramedBody, receiveStreamedRequest, sendFramedBody } from './body-frames.js';
import { SERVE_PATH } from './forward-request.js';
import type { Socket } from 'node:net';

// The HTTP transport of the peer protocol (protocol.ts): a server for the calls other agents
// forward here, and a pooled client for forwarding.

const MAX_PEER_BODY = 32 * 1024 * 1024;
/** A caller that gives no bound waits this long for a silent peer (the old fixed timeout). */
const DEFAULT_SILENCE_MS = 120_000;
const peerAgent = new HttpAgent({ keepAlive: true, maxSockets: 64 });

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > limit) throw new Error(`body over ${limit} bytes`);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

export interface PeerServer {
  server: Server;
  port: number;
  /**
   * Resolves once no forwarded call is in flight and none arrived for quietMs (or after
   * maxMs): a draining agent waits for this instead of a fixed time, so calls other
   * agents routed here before their rings dropped it are answered.
   */
  quiet(quietMs: number, maxMs: number): Promise<void>;
  close(): void;
}

/** The peer token as compared: a fixed-length digest, so timingSafeEqual applies whatever was sent. */
const tokenDigest = (token: string): Buffer => createHash('sha256').update(token, 'utf8').digest();

/** A peer token shorter than this is refused at start. */
export const MIN_PEER_TOKEN_LENGTH = 16;

export class PeerTokenError extends EdgeError {}

/** Clients' requests other hosts forwarded here as a shard member (forward-request.ts). */
export interface ForwardedRequests {
  /** `expectContinue`: the sender waits for 100 Continue before the body (the handler sends it, or refuses). */
  request(req: IncomingMessage, res: ServerResponse, expectContinue: boolean): void;
  upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void;
}

const isServePath = (url: string | undefined): boolean => url === SERVE_PATH;

/**
 * Serves the peer API on host:port. Every call must carry `token` (x-edge-peer-token),
 * compared in constant time; there is no unauthenticated mode. With `serving`, requests
 * forwarded to this host as a shard member (SERVE_PATH) go there.
 */
export async function startPeerServer(handler: PeerHandler, log: Logger, port: number, host: string, token: string, serving?: ForwardedRequests): Promise<PeerServer> {
  if (typeof token !== 'string' || token.length < MIN_PEER_TOKEN_LENGTH) {
    throw new PeerTokenError(`the peer port needs a token of at least ${MIN_PEER_TOKEN_LENGTH} characters ($EDGE_PEER_TOKEN, the same on every agent of the region)`);
  }
  const expected = tokenDigest(token);
  const authorized = (sent: string | string[] | undefined): boolean => typeof sent === 'string' && timingSafeEqual(tokenDigest(sent), expected);
  let inflight = 0;
  let lastCallAt = 0;
  const server = createServer((req, res) => {
    inflight += 1;
    lastCallAt = performance.now();
    res.once('close', () => { inflight -= 1; lastCallAt = performance.now(); });
    const fail = (status: number, msg: string) => {
      // A 421 usually means this agent is handing actors over: let the caller's pooled
      // connection go, so its next call does not race this agent's exit.
      // An unauthenticated caller's connection is not kept either.
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', ...(status === MISDIRECTED || status === 401 ? { connection: 'close' } : {}) });
      res.end(`${msg}\n`);
    };
    void (async () => {
      if (!authorized(req.headers['x-edge-peer-token'])) { fail(401, 'peer token required'); return; }
      if (serving && isServePath(req.url)) { serving.request(req, res, false); return; }
      const url = req.url ?? '';
      if (req.method !== 'POST' || !url.startsWith(PEER_PATH)) { fail(404, 'not a peer endpoint'); return; }
      const addr = parseOrSkip(parseActorInstanceKey, url.slice(PEER_PATH.length));
      if (!addr) { fail(400, 'expected /actors/<namespace>/<actor>/<id>'); return; }
      const headers = HeaderListSchema.safeParse(JSON.parse(String(req.headers['x-edge-headers'] ?? '[]')));
      const target = String(req.headers['x-edge-url'] ?? '');
      const method = String(req.headers['x-edge-method'] ?? 'GET');
      if (!headers.success || !/^https?:\/\//.test(target)) { fail(400, 'malformed forwarded request'); return; }
      // Nothing runs before the whole request is here: a caller that never sent its last
      // chunk (it stopped waiting for our 100 Continue) knows the call did not run. A
      // streamed body cannot wait for its end: the call runs from its first byte, which
      // the caller too sends only after our 100 Continue.
      const upload = req.headers[FRAMED_HEADER] === STREAMED ? await receiveStreamedRequest(req) : undefined;
      const body = upload ? null : await readBody(req, MAX_PEER_BODY);
      const { namespace: ns, actor, id } = addr;
      const hops = Number(req.headers['x-edge-hops'] ?? '0') || 0;
      // While the call runs, 102 Processing tells the caller this agent is alive and on it,
      // so a long call is not taken for a paused agent.
      const beatMs = askedHeartbeat(req.headers[HEARTBEAT_HEADER]);
      const beat = setInterval(() => { if (!res.headersSent && !res.destroyed) res.writeProcessing(); }, beatMs);
      // The caller gone before the answer: a streamed request body it was sending fails.
      res.once('close', () => { if (!res.writableFinished) upload?.cancel('the calling agent closed the connection'); });
      let out: PeerResponse;
      try {
        out = await handler.call(ns, actor, id, upload
          ? { url: target, method, headers: headers.data, body: null, stream: upload }
          : { url: target, method, headers: headers.data, body: body!.length > 0 || !['GET', 'HEAD'].includes(method) ? body : null }, hops);
      } catch (err) {
        if (err instanceof NotHereError) { fail(MISDIRECTED, err.message); return; }
        if (err instanceof ForeignActorIdError) { fail(400, err.message); return; }
        // The caller's stub.fetch() rejects either way, as it would were the actor there
        // (never a Response); the actor's exception is the actor host's to log, with its stack.
        if (err instanceof ActorExceptionError) {
          res.writeHead(500, { [EXCEPTION_HEADER]: encodeHeader([err.exception.name, err.exception.message]), 'content-length': 0 });
          res.end();
          return;
        }
        log.warn('forwarded actor call failed', { actor: actorInstanceKey(ns, actor, id), error: err });
        if (err instanceof CallOutcomeUnknownError) {
          res.writeHead(OUTCOME_UNKNOWN, { 'content-type': 'text/plain; charset=utf-8', [OUTCOME_HEADER]: 'unknown' });
          res.end(`${err.message}\n`);
          return;
        }
        res.writeHead(500, { [FAILURE_HEADER]: encodeHeader(errorMessage(err)), 'content-length': 0 });
        res.end();
        return;
      } finally {
        clearInterval(beat);
      }
      const head = {
        'x-edge-headers': JSON.stringify(out.headers),
        'x-edge-status': String(out.status),
        ...(out.webSocketSid ? { 'x-edge-websocket': out.webSocketSid } : {}),
        // A request body the actor did not read to its end is not read here either: this connection is not reused.
        ...(upload ? { connection: 'close' } : {}),
      };
      if (out.stream) {
        // The head left after the actor's writes were committed; the body follows as the caller reads.
        res.writeHead(out.status, out.statusText, { ...head, [FRAMED_HEADER]: FRAMED });
        res.flushHeaders();
        await sendFramedBody(res, out.stream, beatMs);
        return;
      }
      res.writeHead(out.status === 101 ? 200 : out.status, out.statusText, { ...head, 'content-length': out.body.byteLength });
      res.end(out.body);
    })().catch((err: unknown) => { if (!res.headersSent) fail(400, errorMessage(err)); else res.destroy(); });
  });
  // Node answers 100 Continue itself unless someone listens: a forwarded request is refused
  // (overloaded, not here) before its body is sent, so the first host can still serve it.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (serving && isServePath(req.url) && authorized(req.headers['x-edge-peer-token'])) {
      inflight += 1;
      lastCallAt = performance.now();
      res.once('close', () => { inflight -= 1; lastCallAt = performance.now(); });
      serving.request(req, res, true);
      return;
    }
    res.writeContinue();
    server.emit('request', req, res);
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => { /* closed; whoever uses it sees that */ });
    if (!serving || !isServePath(req.url) || !authorized(req.headers['x-edge-peer-token'])) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    serving.upgrade(req, socket, head);
  });
  server.keepAliveTimeout = 30_000;
  server.listen(port, host);
  await once(server, 'listening');
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('peer server has no TCP address');
  const quiet = async (quietMs: number, maxMs: number) => {
    const until = performance.now() + maxMs;
    while (performance.now() < until && (inflight > 0 || performance.now() - lastCallAt < quietMs)) {
      await new Promise((r) => setTimeout(r, Math.min(50, quietMs)));
    }
  };
  return { server, port: addr.port, quiet, close: () => { server.close(); } };
}

/**
 * Writes a streamed request body to the owner as it reads it. A body that fails before the
 * answer drops the connection (the owner's read fails); once the answer is in (`answered`),
 * the rest is simply not sent (the owner closes the connection after its answer).
 */
async function sendUpload(r: ClientRequest, upload: BodyStream, answered: () => boolean): Promise<void> {
  try {
    for (;;) {
      const c = await upload.read();
      if (r.destroyed) { upload.cancel('the call is over'); return; }
      if (c === null) { r.end(); return; }
      if (!r.write(c)) {
        const ac = new AbortController();
        try {
          await Promise.race([once(r, 'drain', { signal: ac.signal }), once(r, 'close', { signal: ac.signal })]);
        } catch { /* aborted below */ } finally {
          ac.abort();
        }
      }
    }
  } catch (err) {
    if (!answered()) r.destroy(err instanceof Error ? err : new Error(String(err)));
  }
}

/** The owner ran (or may have run) the call, and it failed there: not retried. */
export class PeerCallError extends EdgeError {}

/** An actor's exception (JSON [name, message]) and an owner's failure (JSON string), base64url: any text fits a header. */
const EXCEPTION_HEADER = 'x-edge-exception';
const FAILURE_HEADER = 'x-edge-error';
const encodeHeader = (v: unknown): string => Buffer.from(JSON.stringify(v), 'utf8').toString('base64url');
function decodeHeader(h: string | string[] | undefined): unknown {
  if (typeof h !== 'string') return undefined;
  try { return JSON.parse(Buffer.from(h, 'base64url').toString('utf8')) as unknown; } catch { return undefined; }
}

/** The peer certainly did not run the call (not connected, or it never took the whole request): safe to retry elsewhere. */
export class PeerUnreachableError extends EdgeError {}

/**
 * Forwards an actor call to another agent's peer port (protocol.ts says how a call that
 * did not run is told from one that may have).
 */
export function forwardToPeer(peerAddress: string, namespace: string, actor: string, id: string, req: PeerRequest, hops: number, token?: string, opts: PeerForwardOptions = {}): Promise<PeerResponse> {
  const url = new URL(`${PEER_PATH}${actorInstanceKey(namespace, actor, id)}`, peerAddress);
  const body = req.body ?? new Uint8Array(0);
  const upload = req.stream;
  const silenceMs = opts.silenceMs ?? DEFAULT_SILENCE_MS;
  return new Promise((resolve, reject) => {
    /** The whole request went out: from here on the peer may have run it. */
    let sent = false;
    /** The owner's answer (its head) is here. */
    let answered = false;
    const r = httpRequest(url, {
      method: 'POST',
      agent: peerAgent,
      headers: {
        'x-edge-url': req.url, 'x-edge-method': req.method, 'x-edge-headers': JSON.stringify(req.headers), 'x-edge-hops': String(hops),
        // Chunked even when empty: the request is complete only with its last chunk, sent after 100 Continue.
        expect: '100-continue', 'transfer-encoding': 'chunked', [HEARTBEAT_HEADER]: String(heartbeatFor(silenceMs)),
        ...(upload ? { [FRAMED_HEADER]: STREAMED } : {}),
        ...(token ? { 'x-edge-peer-token': token } : {}),
      },
    }, (res) => {
      answered = true;
      if (res.headers[FRAMED_HEADER] === FRAMED) {
        // The head is here (the owner's writes are committed); the body streams as it is read.
        r.setTimeout(0);
        let headers: [string, string][] = [];
        try { headers = HeaderListSchema.parse(JSON.parse(String(res.headers['x-edge-headers'] ?? '[]'))); } catch { headers = []; }
        const stream = receiveFramedBody(res, silenceMs, (err) => { upload?.cancel(err.message); r.destroy(); });
        // Once the actor's body ended, whatever it did not read of ours is not wanted.
        const ended: BodyStream = {
          read: async () => { const c = await stream.read(); if (c === null) upload?.cancel('the actor\'s request is over'); return c; },
          cancel: (reason) => stream.cancel(reason),
        };
        resolve({ status: Number(res.headers['x-edge-status'] ?? res.statusCode), statusText: res.statusMessage ?? '', headers, body: new Uint8Array(0), stream: ended });
        return;
      }
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (err) => r.destroy(err));
      res.on('end', () => {
        // A whole answer: the actor's request is over, and so is any body it did not read.
        upload?.cancel('the actor\'s request is over');
        const status = res.statusCode ?? 502;
        const payload = Buffer.concat(chunks);
        if (status === MISDIRECTED) { reject(new NotHereError(payload.toString('utf8').trim())); return; }
        if (status === OUTCOME_UNKNOWN && res.headers[OUTCOME_HEADER] === 'unknown') { reject(new CallOutcomeUnknownError(payload.toString('utf8').trim())); return; }
        const exception = decodeHeader(res.headers[EXCEPTION_HEADER]);
        if (Array.isArray(exception)) { reject(new ActorExceptionError(actorException(exception[0], exception[1]), actorInstanceKey(namespace, actor, id))); return; }
        const failure = decodeHeader(res.headers[FAILURE_HEADER]);
        if (failure !== undefined) { reject(new PeerCallError(typeof failure === 'string' ? failure : 'the actor call failed on its owner')); return; }
        const fwdStatus = Number(res.headers['x-edge-status'] ?? status);
        let headers: [string, string][] = [];
        try { headers = HeaderListSchema.parse(JSON.parse(String(res.headers['x-edge-headers'] ?? '[]'))); } catch { headers = []; }
        const sid = res.headers['x-edge-websocket'];
        resolve({ status: fwdStatus, statusText: res.statusMessage ?? '', headers, body: payload, ...(typeof sid === 'string' ? { webSocketSid: sid } : {}) });
      });
    });
    r.on('continue', () => {
      sent = true;
      if (upload) void sendUpload(r, upload, () => answered);
      else r.end(body);
    });
    r.on('error', (err) => reject(sent
      ? new CallOutcomeUnknownError(`the call reached ${url.host}, then ${errorMessage(err)}: it may or may not have run`, { cause: err })
      : new PeerUnreachableError(`${url.host}: ${errorMessage(err)} before it took the call`, { cause: err })));
    // Any byte from the peer (100 Continue, a 102 heartbeat, the answer) restarts this.
    r.setTimeout(silenceMs, () => r.destroy(new Error(`silent for ${silenceMs} ms`)));
    r.flushHeaders();
  });
}
