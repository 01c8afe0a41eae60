import { once } from 'node:events';
import { createServer, request, type IncomingMessage } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ChunkPipe, PulledBody } from '../../common/body-stream.js';
import { createLogger } from '../../common/log.js';
import { forwardToPeer, startPeerServer, type PeerServer } from '../../node-agent/peer/peer-server.js';
import { CallOutcomeUnknownError, type PeerHandler, type PeerRequest } from '../../node-agent/peer/protocol.js';
import { ActorIds } from '../../node-agent/bindings/actor-id.js';
import { PEER_PATH } from '../../node-agent/peer/protocol.js';
import { sendFramedBody } from '../../node-agent/peer/body-frames.js';

// Streamed bodies on the peer channel (issue 14, item 5) keep issue 13's guarantees: a call
// whose caller never got 100 Continue never runs (the owner waits for the first byte of a
// streamed body, which the caller sends only after the 100); past the head, a read that
// waits on a silent owner fails after the bound as "outcome unknown", while a live owner
// whose actor is slow keeps the body alive with heartbeat frames; a body that fails on the
// owner fails at the caller (never reads as a short body), and the caller's cancel reaches
// the owner's stream.

const TOKEN = 'peer-streaming-test-token';
const quiet = createLogger({}, () => undefined);
const ID = new ActorIds('uid-1').idFromName('x').hex;
const enc = new TextEncoder();
const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const closers: (() => unknown)[] = [];
afterEach(async () => { for (const c of closers.splice(0).reverse()) await c(); });

async function peer(handler: PeerHandler): Promise<string> {
  const p: PeerServer = await startPeerServer(handler, quiet, 0, '127.0.0.1', TOKEN);
  closers.push(() => p.close());
  return `http://127.0.0.1:${p.port}`;
}

/** A body of `parts`, each after `gapMs`; `cancelled` records a cancel. */
function slowBody(parts: string[], gapMs: number) {
  let i = 0;
  const seen: { cancelled?: string } = {};
  const body = new PulledBody(async () => {
    if (i >= parts.length) return null;
    if (i > 0) await sleep(gapMs);
    return enc.encode(parts[i++]!);
  }, (reason) => { seen.cancelled = reason; });
  return { body, seen };
}

const get: PeerRequest = { url: 'http://actor/x', method: 'GET', headers: [], body: null };

async function readAll(stream: { read(): Promise<Uint8Array | null> }): Promise<string> {
  let out = '';
  for (let c = await stream.read(); c !== null; c = await stream.read()) out += dec.decode(c);
  return out;
}

describe('streamed bodies between agents', () => {
  it('a live owner whose actor is slower than the silence bound keeps the body alive with heartbeats', async () => {
    const { body } = slowBody(['a', 'b', 'c'], 700);
    const url = await peer({ call: async () => ({ status: 200, statusText: 'OK', headers: [['x', '1']], body: new Uint8Array(0), stream: body }) });
    const res = await forwardToPeer(url, 'ns', 'counters', ID, get, 1, TOKEN, { silenceMs: 300 });
    expect(res.status).toBe(200);
    expect(res.headers).toEqual([['x', '1']]);
    expect(await readAll(res.stream!)).toBe('abc');
  });

  it('an owner that goes silent in the middle of a body: the waiting read fails after the bound, outcome unknown', async () => {
    const sockets = new Set<Socket>();
    const srv: TcpServer = createTcpServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
      let answered = false;
      s.on('data', () => {
        if (answered) return;
        answered = true;
        // A framed head and one data frame, then nothing (a paused owner).
        const frame = Buffer.concat([Buffer.from([1, 0, 0, 0, 2]), Buffer.from('hi')]);
        s.write(`HTTP/1.1 200 OK\r\nx-edge-body: framed\r\nx-edge-status: 200\r\nx-edge-headers: []\r\ntransfer-encoding: chunked\r\n\r\n${frame.length.toString(16)}\r\n`);
        s.write(frame);
        s.write('\r\n');
      });
    });
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    closers.push(() => { for (const s of sockets) s.destroy(); srv.close(); });
    const url = `http://127.0.0.1:${(srv.address() as { port: number }).port}`;
    const res = await forwardToPeer(url, 'ns', 'counters', ID, get, 1, TOKEN, { silenceMs: 300 });
    expect(dec.decode((await res.stream!.read())!)).toBe('hi');
    const err = await res.stream!.read().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CallOutcomeUnknownError);
  });

  it('a body that fails on the owner fails at the caller, never reads as a short body', async () => {
    let n = 0;
    const body = new PulledBody(async () => {
      if (n++ === 0) return enc.encode('part');
      throw new Error('the actor\'s stream errored');
    }, () => undefined);
    const url = await peer({ call: async () => ({ status: 200, statusText: 'OK', headers: [], body: new Uint8Array(0), stream: body }) });
    const res = await forwardToPeer(url, 'ns', 'counters', ID, get, 1, TOKEN, { silenceMs: 2_000 });
    expect(dec.decode((await res.stream!.read())!)).toBe('part');
    await expect(res.stream!.read()).rejects.toThrow(/stream errored/);
  });

  it('the caller\'s cancel reaches the owner\'s stream', async () => {
    const { body, seen } = slowBody(Array.from({ length: 1000 }, (_, i) => `p${i}`), 5);
    const url = await peer({ call: async () => ({ status: 200, statusText: 'OK', headers: [], body: new Uint8Array(0), stream: body }) });
    const res = await forwardToPeer(url, 'ns', 'counters', ID, get, 1, TOKEN, { silenceMs: 2_000 });
    await res.stream!.read();
    res.stream!.cancel('enough');
    await body.done;
    expect(seen.cancelled).toMatch(/closed the connection/);
  });

  it('a streamed request body reaches the handler as it is sent, and its end', async () => {
    const got: string[] = [];
    const url = await peer({
      call: async (_ns, _a, _id, r) => {
        got.push(await readAll(r.stream!));
        return { status: 200, statusText: 'OK', headers: [], body: enc.encode('ok') };
      },
    });
    const upload = new ChunkPipe();
    const pending = forwardToPeer(url, 'ns', 'counters', ID, { url: 'http://actor/x', method: 'POST', headers: [], body: null, stream: upload }, 1, TOKEN, { silenceMs: 2_000 });
    for (const c of ['one ', 'two ', 'three']) await upload.write(enc.encode(c));
    upload.end();
    const res = await pending;
    expect(dec.decode(res.body)).toBe('ok');
    expect(got).toEqual(['one two three']);
  });

  it('a streamed call whose body never came (the caller never got 100 Continue) never runs', async () => {
    let ran = 0;
    const url = new URL(await peer({ call: async () => { ran++; return { status: 200, statusText: 'OK', headers: [], body: new Uint8Array(0) }; } }));
    const req = request({
      host: url.hostname, port: url.port, method: 'POST', path: `${PEER_PATH}ns/counters/${ID}`,
      headers: { 'x-edge-peer-token': TOKEN, 'x-edge-url': 'http://actor/x', 'x-edge-method': 'POST', 'x-edge-body': 'stream', expect: '100-continue', 'transfer-encoding': 'chunked' },
    });
    req.on('error', () => undefined);
    req.flushHeaders();
    await once(req, 'continue');
    // The 100 came, but no body byte follows (as a caller that lost it would): then the caller goes.
    await sleep(200);
    req.destroy();
    await sleep(200);
    expect(ran).toBe(0);
  });
  it('a calling agent that stops taking the body (paused) has it cancelled on the owner after the bound', async () => {
    const seen: { cancelled?: string } = {};
    const chunk = new Uint8Array(64 * 1024);
    const body = new PulledBody(async () => chunk, (reason) => { seen.cancelled = reason; });
    const server = createServer((_req, res) => { res.writeHead(200); void sendFramedBody(res, body, 1_000, 300); });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    closers.push(() => { server.closeAllConnections(); server.close(); });
    const req = request({ host: '127.0.0.1', port: (server.address() as { port: number }).port, path: '/' });
    req.on('error', () => undefined);
    req.end();
    const [res] = await once(req, 'response') as [IncomingMessage];
    // Never read: the sockets fill, the owner's writes wait, and the bound ends them.
    res.pause();
    await body.done;
    expect(seen.cancelled).toMatch(/took nothing/);
    req.destroy();
  });
});
