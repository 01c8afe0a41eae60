import { describe, expect, it } from 'vitest';
import { bridge, closeReason, isWireCloseCode, socketPair, SocketRegistry, type HostSocket, type SentCallback, type SocketData } from '../../node-agent/sockets/sockets.js';
import { IsolateSockets, SocketLimitError } from '../../node-agent/sockets/isolate-sockets.js';

// HostSocket plumbing: the in-memory pair and bridge(), which a later piece uses to carry
// an actor's sockets between agents.

function record(s: HostSocket) {
  const messages: SocketData[] = [];
  const closes: [number, string][] = [];
  s.attach({ onMessage: (d) => messages.push(d), onClose: (c, r) => closes.push([c, r]) });
  return { messages, closes };
}
const tick = () => new Promise((r) => setTimeout(r, 0));

describe('socketPair', () => {
  it('carries messages in order, buffers until attach, and copies bytes', async () => {
    const [a, b] = socketPair();
    const bytes = new Uint8Array([1, 2]);
    a.send('x');
    a.send(bytes);
    bytes[0] = 9;
    await tick();
    const rb = record(b);
    expect(rb.messages).toEqual(['x', new Uint8Array([1, 2])]);
    expect(() => b.attach({ onMessage: () => {}, onClose: () => {} })).toThrow(/already attached/);
  });

  it('closes one direction at a time, each once; nothing is sent after close()', async () => {
    const [a, b] = socketPair();
    const ra = record(a);
    const rb = record(b);
    a.close(1000, 'done');
    a.send('ignored');
    a.close(1001, 'again');
    await tick();
    expect(rb.closes).toEqual([[1000, 'done']]);
    expect(rb.messages).toEqual([]);
    expect(ra.closes).toEqual([]);
    b.close(1000, 'done');
    await tick();
    expect(ra.closes).toEqual([[1000, 'done']]);
    expect([a.closed, b.closed]).toEqual([true, true]);
  });
});

describe('bridge', () => {
  it('joins two sockets both ways, closes included', async () => {
    // client <-> [x  bridge  y] <-> server: as an agent joins a client's connection to an actor's socket.
    const [client, x] = socketPair();
    const [y, server] = socketPair();
    bridge(x, y);
    const rc = record(client);
    const rs = record(server);
    client.send('up');
    server.send(new Uint8Array([5]));
    await tick();
    expect(rs.messages).toEqual(['up']);
    expect(rc.messages).toEqual([new Uint8Array([5])]);
    client.close(4001, 'leaving');
    await tick();
    expect(rs.closes).toEqual([[4001, 'leaving']]);
    server.close(4001, 'leaving');
    await tick();
    expect(rc.closes).toEqual([[4001, 'leaving']]);
  });
});

describe('SocketRegistry and close frames', () => {
  it('numbers sockets and forgets them', () => {
    const reg = new SocketRegistry({ maxMessageBytes: 10 });
    const [a, b] = socketPair();
    const ia = reg.register(a);
    const ib = reg.register(b);
    expect(ib).not.toBe(ia);
    expect(reg.get(ia)).toBe(a);
    expect(reg.size).toBe(2);
    expect(reg.delete(ia)).toBe(true);
    expect(reg.get(ia)).toBeUndefined();
    expect(reg.maxMessageBytes).toBe(10);
    expect(new SocketRegistry().maxMessageBytes).toBe(1024 * 1024);
  });

  it('knows which codes may go on the wire, and cuts long reasons on a character boundary', () => {
    expect([1000, 1001, 1009, 1011, 1014, 3000, 4999].every(isWireCloseCode)).toBe(true);
    expect([999, 1004, 1005, 1006, 1015, 2000, 5000, 1000.5].some(isWireCloseCode)).toBe(false);
    const long = 'é'.repeat(100);
    const cut = closeReason(long);
    expect(Buffer.byteLength(cut)).toBe(122);
    expect(cut).toBe('é'.repeat(61));
    expect(closeReason('short')).toBe('short');
  });
});

describe('IsolateSockets: the outgoing backlog', () => {
  /** An isolate's sockets whose client ends are joined to in-memory transports the test drains by hand. */
  function isolateSockets(opts: { socket: number; isolate: number }) {
    const registry = new SocketRegistry({ maxMessageBytes: 10, maxSocketBacklogBytes: opts.socket, maxIsolateBacklogBytes: opts.isolate });
    const events: [number, string, number?][] = [];
    const sockets = new IsolateSockets(registry, 'ns/w', (s, e) => events.push([s.local, e.type, e.type === 'close' ? e.code : undefined]), () => {});
    const held: SentCallback[] = [];
    const clientCloses: number[] = [];
    const open = (local: number) => {
      const s = sockets.forLocal(local)!;
      s.attach({ onMessage: (_d, sent) => { if (sent) held.push(sent); }, onClose: (code) => clientCloses.push(code) });
      return s;
    };
    return { registry, sockets, events, held, clientCloses, open };
  }

  it('counts bytes until the transport wrote them, and closes a socket over its bound (1008 out, 1006 in)', () => {
    const t = isolateSockets({ socket: 20, isolate: 100 });
    t.open(1);
    expect(t.sockets.send(1, 'x'.repeat(10))).toBe(true);
    expect(t.sockets.send(1, 'x'.repeat(10))).toBe(true);
    expect(t.sockets.backlogBytes).toBe(20);
    expect(t.registry.backlogBytes().get('ns/w')).toBe(20);
    t.held.shift()!();
    t.held.shift()!();
    t.held.length = 0;
    expect(t.sockets.backlogBytes).toBe(0);
    expect(t.sockets.send(1, 'y'.repeat(10))).toBe(true);
    expect(t.sockets.send(1, 'y'.repeat(10))).toBe(true);
    expect(t.sockets.send(1, 'y')).toBe(false);
    expect(t.clientCloses).toEqual([1008]);
    expect(t.events).toEqual([[1, 'close', 1006]]);
    // Later sends are dropped; what was held is released as the transport lets go of it.
    expect(t.sockets.send(1, 'z')).toBe(false);
    for (const sent of t.held.splice(0)) sent();
    expect(t.sockets.backlogBytes).toBe(0);
    expect(t.registry.backlogBytes().size).toBe(0);
  });

  it('over the isolate bound closes the socket holding the most, and a send that still does not fit throws', () => {
    const t = isolateSockets({ socket: 100, isolate: 30 });
    t.open(1);
    t.open(2);
    t.sockets.send(1, 'a'.repeat(10));
    t.sockets.send(1, 'a'.repeat(10));
    t.sockets.send(2, 'b'.repeat(5));
    expect(() => t.sockets.send(2, 'b'.repeat(10))).toThrow(SocketLimitError);
    expect(t.events).toEqual([[1, 'close', 1006]]);
    for (const sent of t.held.splice(0)) sent();
    expect(t.sockets.send(2, 'b'.repeat(10))).toBe(true);
  });

  it('releases what a socket never handed to a client held when the isolate lets it go', () => {
    const t = isolateSockets({ socket: 100, isolate: 100 });
    t.sockets.send(3, 'q'.repeat(10));
    expect(t.sockets.backlogBytes).toBe(10);
    t.sockets.closeAll(1011, 'gone');
    expect(t.sockets.backlogBytes).toBe(0);
  });
});
