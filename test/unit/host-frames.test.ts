import { afterEach, describe, expect, it } from 'vitest';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { createLogger } from '../../common/log.js';
import {
  encodeFrame, frameReader, FrameProtocolError, FrameServer, FrameType, WINDOW_BYTES, type FramedHandler,
} from '../../node-agent/serving/host-frames.js';
import { FrameClient } from '../../node-agent/hosts/frame-relay.js';

// The frame relay between an agent's front and an isolate host (serving/host-frames.ts,
// hosts/frame-relay.ts) on a real Unix socket, with a real node HTTP server as the front and
// real HTTP clients: bodies whole both ways, flow control holding a slow side to a window,
// failures kept to their own request.

const logged: string[] = [];
const log = createLogger({ component: 'test' }, (line) => { logged.push(line); });

interface Rig { port: number; client: FrameClient; server: FrameServer; failed: Error[]; close(): Promise<void> }

const rigs: Rig[] = [];
afterEach(async () => { for (const r of rigs.splice(0)) await r.close(); });

async function rig(handler: FramedHandler): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), 'frames-'));
  const path = join(dir, 'h.sock');
  const server = new FrameServer(handler, log);
  await server.listen(path);
  const client = new FrameClient(path, log);
  const failed: Error[] = [];
  const front: Server = createServer((req, res) => {
    client.relay(req, res, req.rawHeaders, (err) => {
      failed.push(err);
      res.writeHead(503, { 'content-length': '0' });
      res.end();
    });
  });
  front.listen(0, '127.0.0.1');
  await once(front, 'listening');
  const port = (front.address() as { port: number }).port;
  const r: Rig = {
    port, client, server, failed,
    close: async () => {
      front.closeAllConnections();
      front.close();
      client.close();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  rigs.push(r);
  return r;
}

function send(port: number, opts: { method?: string; path?: string; headers?: Record<string, string>; body?: Buffer | string; chunked?: boolean }): Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request({ port, host: '127.0.0.1', method: opts.method ?? 'GET', path: opts.path ?? '/', headers: opts.headers ?? {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (opts.body !== undefined && opts.chunked) {
      const b = Buffer.from(opts.body);
      for (let at = 0; at < b.length; at += 100_000) req.write(b.subarray(at, at + 100_000));
      req.end();
    } else {
      req.end(opts.body);
    }
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Writes `total` bytes to `w` in 64 KiB chunks as fast as it takes them (waiting for drain),
 * then ends it; returns how much it has written so far.
 */
function flood(w: { write(chunk: Buffer): boolean; once(event: 'drain', fn: () => void): unknown; end(): unknown }, total: number): () => number {
  const chunk = Buffer.alloc(64 * 1024, 7);
  let written = 0;
  const pump = (): void => {
    while (written < total) {
      written += chunk.length;
      if (!w.write(chunk)) { w.once('drain', pump); return; }
    }
    w.end();
  };
  pump();
  return () => written;
}

describe('frame codec', () => {
  it('reassembles frames from any split of the byte stream', () => {
    const frames = [
      encodeFrame(FrameType.open, 1, JSON.stringify({ method: 'GET', url: '/', headers: [], httpVersion: '1.1', body: false })),
      encodeFrame(FrameType.data, 7, Buffer.alloc(70_000, 3)),
      encodeFrame(FrameType.end, 7),
      encodeFrame(FrameType.reset, 0xfffffffe),
    ];
    const all = Buffer.concat(frames);
    for (const step of [1, 2, 9, 10, 4096, all.length]) {
      const got: [number, number, number][] = [];
      const read = frameReader((type, id, payload) => got.push([type, id, payload.length]));
      for (let at = 0; at < all.length; at += step) read(all.subarray(at, at + step));
      expect(got).toEqual([[FrameType.open, 1, frames[0]!.length - 9], [FrameType.data, 7, 70_000], [FrameType.end, 7, 0], [FrameType.reset, 0xfffffffe, 0]]);
    }
  });

  it('refuses a frame longer than the bound before buffering it', () => {
    const read = frameReader(() => undefined);
    const head = Buffer.alloc(9);
    head.writeUInt32LE(64 * 1024 * 1024, 0);
    expect(() => read(head)).toThrow(FrameProtocolError);
  });
});

describe('the frame relay', () => {
  it('carries method, path, headers and a chunked 3 MB body to the host, and the response back whole', async () => {
    const body = Buffer.alloc(3_000_000);
    for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 0xff;
    const r = await rig((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const got = Buffer.concat(chunks);
        res.writeHead(201, 'Made', ['x-len', String(got.length), 'x-method', req.method!, 'x-url', req.url!, 'x-custom', String(req.headers['x-custom'])]);
        res.end(got);
      });
    });
    const out = await send(r.port, { method: 'POST', path: '/a/b?c=1', headers: { 'x-custom': 'v' }, body, chunked: true });
    expect(out.status).toBe(201);
    expect(out.headers).toMatchObject({ 'x-len': '3000000', 'x-method': 'POST', 'x-url': '/a/b?c=1', 'x-custom': 'v' });
    expect(out.body.equals(body)).toBe(true);
    expect(r.client.open).toBe(0);
  });

  it('interleaves many requests on one connection, each answered with its own body', async () => {
    const r = await rig((req, res) => {
      const delay = Number(new URL(req.url!, 'http://x').searchParams.get('d'));
      setTimeout(() => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end(req.url); }, delay);
    });
    const outs = await Promise.all(Array.from({ length: 200 }, (_, i) => send(r.port, { path: `/r${i}?d=${(i * 7) % 20}` })));
    expect(outs.map((o) => o.body.toString())).toEqual(Array.from({ length: 200 }, (_, i) => `/r${i}?d=${(i * 7) % 20}`));
  });

  it('holds a handler that writes faster than its client reads to about a window, and delivers everything once the client reads', async () => {
    const total = 48 * 1024 * 1024;
    let accepted = (): number => 0;
    const r = await rig((_req, res) => {
      res.writeHead(200, { 'content-length': String(total) });
      accepted = flood(res, total);
    });
    const received = await new Promise<number>((resolve, reject) => {
      const req = request({ port: r.port, host: '127.0.0.1', path: '/' }, (res) => {
        res.pause();
        // The client reads nothing for a second: what the handler could write is a window,
        // the front's socket buffers and the kernel's, never the whole body.
        setTimeout(() => {
          try {
            expect(accepted()).toBeLessThan(16 * 1024 * 1024);
          } catch (err) { reject(err); return; }
          let n = 0;
          res.on('data', (c: Buffer) => { n += c.length; });
          res.on('end', () => resolve(n));
          res.resume();
        }, 1000);
      });
      req.on('error', reject);
      req.end();
    });
    expect(received).toBe(total);
  });

  it('holds a client that sends faster than the handler reads to a window in the host', async () => {
    let hostReq: IncomingMessage | undefined;
    let hostRes: ServerResponse | undefined;
    const r = await rig((req, res) => { hostReq = req; hostRes = res; req.pause(); });
    const total = 32 * 1024 * 1024;
    let written = (): number => 0;
    const done = new Promise<number>((resolve, reject) => {
      const req = request({ port: r.port, host: '127.0.0.1', method: 'POST', path: '/', headers: { 'content-length': String(total) } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      written = flood(req, total);
    });
    await sleep(1000);
    expect(hostReq).toBeDefined();
    // Paused: it has buffered what arrived; the front stopped at the window.
    // The window, plus what the host took while under its stream's high-water mark, plus one socket read.
    expect(hostReq!.readableLength).toBeLessThanOrEqual(WINDOW_BYTES + 3 * 64 * 1024);
    expect(written()).toBeLessThan(total);
    let got = 0;
    hostReq!.on('data', (c: Buffer) => { got += c.length; });
    hostReq!.on('end', () => { hostRes!.writeHead(200, { 'content-length': '0' }); hostRes!.end(); });
    hostReq!.resume();
    expect(await done).toBe(200);
    expect(got).toBe(total);
  });

  it('tells the handler when the client goes away: its response closes unfinished and its body fails', async () => {
    const seen: string[] = [];
    const r = await rig((req, res) => {
      req.on('error', () => seen.push('req error'));
      res.on('close', () => seen.push(res.writableFinished ? 'finished' : 'closed unfinished'));
      req.resume();
    });
    const req = request({ port: r.port, host: '127.0.0.1', method: 'POST', path: '/', headers: { 'content-length': '1000' } });
    req.on('error', () => undefined);
    req.write('x'.repeat(10));
    await sleep(200);
    req.destroy();
    await sleep(300);
    expect(seen).toContain('closed unfinished');
    expect(seen).toContain('req error');
    expect(r.client.open).toBe(0);
  });

  it('a head node would refuse fails that request only; the connection serves the next', async () => {
    const r = await rig((req, res) => {
      if (req.url === '/bad') {
        try { res.writeHead(200, ['x-bad', 'a\r\nb']); } catch { res.writeHead(500, { 'content-length': '0' }); res.end(); return; }
        res.end('unreachable');
        return;
      }
      // A connection-level header is the host's to drop: the front keeps its client's connection.
      res.setHeader('connection', 'close');
      res.writeHead(200, undefined, ['content-length', '2', 'x-form', 'status, undefined, headers', 'Keep-Alive', 'timeout=1']);
      res.end('ok');
    });
    const [bad, good] = await Promise.all([send(r.port, { path: '/bad' }), send(r.port, { path: '/good' })]);
    expect(bad.status).toBe(500);
    expect(good.body.toString()).toBe('ok');
    expect(good.headers['x-form']).toBe('status, undefined, headers');
    expect(good.headers.connection).toBe('keep-alive');
    expect(good.headers['keep-alive']).not.toBe('timeout=1');
  });

  it('a host that goes away fails the requests it had not answered (the caller answers them) and cuts the ones it had', async () => {
    const r = await rig((req, res) => {
      if (req.url === '/started') { res.writeHead(200, { 'content-length': '100' }); res.write('partial'); }
    });
    const started = send(r.port, { path: '/started' }).then(() => 'ended', (err: NodeJS.ErrnoException) => err.code ?? 'error');
    const waiting = send(r.port, { path: '/never' });
    await sleep(200);
    r.server.close();
    expect(await started).toMatch(/ECONNRESET|aborted/);
    expect((await waiting).status).toBe(503);
    expect(r.failed).toHaveLength(1);
  });

  it('a connection that sends a malformed frame is closed, and the host keeps serving others', async () => {
    const r = await rig((_req, res) => { res.writeHead(200, { 'content-length': '2' }); res.end('ok'); });
    const path = (r.server.server.address() as string);
    const bad = connect(path);
    const closed = once(bad, 'close');
    const frame = Buffer.alloc(9);
    frame.writeUInt32LE(5, 0);
    frame[4] = 99;
    bad.write(Buffer.concat([encodeFrame(FrameType.open, 1, JSON.stringify({ method: 'GET', url: '/', headers: [], httpVersion: '1.1', body: false })), encodeFrame(FrameType.data, 1, Buffer.from('x')), frame]));
    bad.on('error', () => undefined);
    await closed;
    expect(logged.some((l) => l.includes('malformed frame') && l.includes('frame type 99'))).toBe(true);
    expect((await send(r.port, { path: '/' })).body.toString()).toBe('ok');
  });
});
