import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'node:http';
import { connect } from 'node:net';
import { createHash } from 'node:crypto';
import { waitFor } from '../../cli/local/ports.js';
import { startAgentProcess, type AgentProcess } from '../security/agent-process.js';

// The agent's front relaying to an isolate host (node-agent/hosts/proxy.ts, as frames:
// hosts/frame-relay.ts): what a client sends reaches the worker whole, what the
// worker answers reaches the client whole, and a client that goes away stops the worker.

const ECHO = `export default {
  async fetch(request) {
    const body = new Uint8Array(await request.arrayBuffer());
    const digest = await crypto.subtle.digest('SHA-256', body);
    const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
    const url = new URL(request.url);
    if (url.pathname === '/empty') return new Response(null, { status: 204 });
    return Response.json({
      method: request.method, host: request.headers.get('host'), length: body.length, sha256: hex,
      expect: request.headers.get('expect'), te: request.headers.get('transfer-encoding'),
      ip: request.headers.get('cf-connecting-ip'), custom: request.headers.get('x-custom'),
    }, { headers: { 'x-from-worker': 'yes' } });
  },
};`;

const BIG = `export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === '/wait') {
      await new Promise((resolve) => request.signal.addEventListener('abort', resolve));
      console.log('relay-test: the request was aborted');
      return new Response('gone');
    }
    let sent = 0;
    const chunk = new Uint8Array(64 * 1024).fill(97);
    return new Response(new ReadableStream({
      pull(controller) {
        if (sent >= 64) { controller.close(); return; }
        sent += 1;
        controller.enqueue(chunk);
      },
    }));
  },
};`;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    // Not half-closed: the last request says Connection: close, and the server ends it.
    const s = connect(port, '127.0.0.1', () => s.write(text));
    let out = '';
    s.on('data', (d: Buffer) => { out += d.toString('latin1'); });
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
}

describe('the front relaying to an isolate host', () => {
  let agent: AgentProcess;

  beforeAll(async () => {
    agent = await startAgentProcess([
      { name: 'echo', source: ECHO, host: 'echo.test' },
      { name: 'big', source: BIG, host: 'big.test', limits: { wallMsPerRequest: 30_000 } },
    ], ['--isolate-hosts', '1', '--isolate-host-spares', '0', '--no-cordon']);
    await waitFor('workers served', async () => (await agent.get('echo.test')).status === 200 && (await agent.get('big.test')).status === 200, 30_000, 50);
  }, 120_000);

  afterAll(() => agent?.stop());

  it('streams a chunked request body of 3 MiB to the worker whole, with the client\'s headers and not its framing', async () => {
    const body = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 0xff;
    const res = await new Promise<{ status: number; text: string; headers: Record<string, unknown> }>((resolve, reject) => {
      const req = request({ port: agent.port, host: '127.0.0.1', method: 'POST', path: '/up', headers: { host: 'echo.test', 'x-custom': 'a b', 'transfer-encoding': 'chunked', 'cf-connecting-ip': '6.6.6.6' } }, (r) => {
        let text = '';
        r.setEncoding('utf8');
        r.on('data', (d: string) => { text += d; });
        r.on('end', () => resolve({ status: r.statusCode ?? 0, text, headers: r.headers }));
      });
      req.on('error', reject);
      for (let off = 0; off < body.length; off += 100_000) req.write(body.subarray(off, off + 100_000));
      req.end();
    });
    expect(res.status).toBe(200);
    expect(res.headers['x-from-worker']).toBe('yes');
    const seen = JSON.parse(res.text) as Record<string, unknown>;
    expect(seen).toMatchObject({ method: 'POST', host: 'echo.test', length: body.length, sha256: sha(body), custom: 'a b', ip: '127.0.0.1' });
  });

  it('takes a body sent after 100 Continue', async () => {
    const body = Buffer.from('after continue');
    const res = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request({ port: agent.port, host: '127.0.0.1', method: 'PUT', path: '/', headers: { host: 'echo.test', expect: '100-continue', 'content-length': body.length } }, (r) => {
        let text = '';
        r.on('data', (d: Buffer) => { text += d.toString(); });
        r.on('end', () => resolve({ status: r.statusCode ?? 0, text }));
      });
      req.on('continue', () => req.end(body));
      req.on('error', reject);
    });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toMatchObject({ method: 'PUT', length: body.length, sha256: sha(body) });
  });

  it('refuses a request with two Host headers, as the host itself does', async () => {
    const out = await raw(agent.port, 'GET / HTTP/1.1\r\nHost: echo.test\r\nHost: big.test\r\nConnection: close\r\n\r\n');
    expect(out).toMatch(/^HTTP\/1\.1 400 /);
    expect(out).toContain('one Host header');
  });

  it('answers HEAD and 204 without a body, and keeps the connection usable', async () => {
    const out = await raw(agent.port, 'HEAD / HTTP/1.1\r\nHost: echo.test\r\n\r\nGET /empty HTTP/1.1\r\nHost: echo.test\r\n\r\nGET / HTTP/1.1\r\nHost: echo.test\r\nConnection: close\r\n\r\n');
    const statuses = [...out.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
    expect(statuses).toEqual(['200', '204', '200']);
    expect(out).toContain('"method":"GET"');
  });

  it('streams a 4 MiB response to a slow reader whole', async () => {
    const got = await new Promise<number>((resolve, reject) => {
      const req = request({ port: agent.port, host: '127.0.0.1', path: '/', headers: { host: 'big.test' } }, (r) => {
        let n = 0;
        r.on('data', (d: Buffer) => {
          n += d.length;
          // Reads in bursts, so the front's writes meet backpressure and pause the host.
          r.pause();
          setTimeout(() => r.resume(), 2);
        });
        r.on('end', () => resolve(n));
        r.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });
    expect(got).toBe(64 * 64 * 1024);
  });

  it('a client that goes away aborts the worker\'s request.signal', async () => {
    const req = request({ port: agent.port, host: '127.0.0.1', path: '/wait', headers: { host: 'big.test' } });
    req.on('error', () => { /* we cut it */ });
    req.end();
    await new Promise((r) => setTimeout(r, 300));
    req.destroy();
    await waitFor('the worker saw the abort', async () => agent.output().includes('relay-test: the request was aborted'), 10_000, 50);
    expect((await agent.get('echo.test')).status).toBe(200);
  });
});
