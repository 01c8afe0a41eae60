import { describe, expect, it } from 'vitest';
import { bridge, closeReason, isWireCloseCode, socketPair, SocketRegistry, type HostSocket, type SocketData } from '../../node-agent/sockets/sockets.js';

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
