import { once } from 'node:events';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/log.js';
import { forwardToPeer, PeerUnreachableError, startPeerServer, type PeerServer } from '../../node-agent/peer/peer-server.js';
import { CallOutcomeUnknownError, type PeerHandler, type PeerRequest } from '../../node-agent/peer/protocol.js';
import { ActorIds } from '../../node-agent/bindings/actor-id.js';

// Issue 13, item 3: a forwarded actor call waits on a silent owner (SIGSTOP, a stalled
// event loop) no longer than the bound the router gives (presence TTL + margin), and the
// caller can tell a call the owner certainly never ran (it never took the whole request:
// safe to route again) from one it may have run (outcome unknown). A paused process is, to
// the network, a socket the kernel accepted that nobody reads: the raw TCP servers here are
// exactly that; the real peer server answers the other cases.

const TOKEN = 'peer-silence-test-token';
const quiet = createLogger({}, () => undefined);
const ID = new ActorIds('uid-1').idFromName('x').hex;
const req: PeerRequest = { url: 'http://actor/x', method: 'POST', headers: [], body: new TextEncoder().encode('hello') };

const closers: (() => unknown)[] = [];
afterEach(async () => { for (const c of closers.splice(0).reverse()) await c(); });

async function rawServer(onSocket: (s: Socket) => void): Promise<string> {
  const sockets = new Set<Socket>();
  const srv: TcpServer = createTcpServer((s) => { sockets.add(s); s.on('error', () => undefined); onSocket(s); });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  closers.push(() => { for (const s of sockets) s.destroy(); srv.close(); });
  const addr = srv.address();
  if (addr === null || typeof addr === 'string') throw new Error('no address');
  return `http://127.0.0.1:${addr.port}`;
}

async function peer(handler: PeerHandler): Promise<PeerServer> {
  const p = await startPeerServer(handler, quiet, 0, '127.0.0.1', TOKEN);
  closers.push(() => p.close());
  return p;
}

describe('forwarded actor calls and a silent owner', () => {
  it('a peer that accepts the connection and never reads (paused): certainly not run, after the bound', async () => {
    let bytes = 0;
    const url = await rawServer((s) => { s.on('data', (d) => { bytes += d.length; }); });
    // The old transport waited 120 s here (past the test's timeout).
    const err = await forwardToPeer(url, 'ns', 'counters', ID, req, 1, TOKEN, { silenceMs: 400 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PeerUnreachableError);
    // Only the head went out: the body (the end of the request) waited for 100 Continue.
    expect(bytes).toBeGreaterThan(0);
  });

  it('a peer that took the whole request and then went silent: the outcome is unknown, never retried as "not run"', async () => {
    let body = '';
    const url = await rawServer((s) => {
      let head = true;
      s.on('data', (d) => {
        if (head) { head = false; s.write('HTTP/1.1 100 Continue\r\n\r\n'); return; }
        body += d.toString();
      });
    });
    const err = await forwardToPeer(url, 'ns', 'counters', ID, req, 1, TOKEN, { silenceMs: 400 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CallOutcomeUnknownError);
    expect(String((err as Error).message)).toMatch(/may or may not have run/);
    expect(body).toContain('hello');
  });

  it('a long call on a live peer is kept alive by its heartbeats, well past the bound', async () => {
    const p = await peer({
      call: async (_ns, _actor, _id, r) => {
        await new Promise((resolve) => setTimeout(resolve, 1_500));
        return { status: 200, statusText: 'OK', headers: [['x-got', new TextDecoder().decode(r.body!)]], body: new TextEncoder().encode('done') };
      },
    });
    const res = await forwardToPeer(`http://127.0.0.1:${p.port}`, 'ns', 'counters', ID, req, 1, TOKEN, { silenceMs: 300 });
    expect(res.status).toBe(200);
    expect(new TextDecoder().decode(res.body)).toBe('done');
    expect(res.headers).toEqual([['x-got', 'hello']]);
  });

  it('an empty request body still waits for 100 Continue, and reaches the handler as null for GET', async () => {
    const seen: (Uint8Array | null)[] = [];
    const p = await peer({
      call: async (_ns, _actor, _id, r) => { seen.push(r.body); return { status: 204, statusText: 'No Content', headers: [], body: new Uint8Array(0) }; },
    });
    const res = await forwardToPeer(`http://127.0.0.1:${p.port}`, 'ns', 'counters', ID, { url: 'http://actor/x', method: 'GET', headers: [], body: null }, 1, TOKEN, { silenceMs: 300 });
    expect(res.status).toBe(204);
    expect(seen).toEqual([null]);
  });

  it('an unknown outcome one hop further is passed back as unknown', async () => {
    const p = await peer({ call: async () => { throw new CallOutcomeUnknownError('actor x: the call reached agent c, which then stopped answering'); } });
    const err = await forwardToPeer(`http://127.0.0.1:${p.port}`, 'ns', 'counters', ID, req, 1, TOKEN, { silenceMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CallOutcomeUnknownError);
    expect((err as Error).message).toMatch(/agent c/);
  });
});
