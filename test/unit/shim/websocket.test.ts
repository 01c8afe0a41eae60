import { afterEach, describe, expect, it } from 'vitest';
import type { HostSocket, SocketData } from '../../../node-agent/sockets/sockets.js';
import { evaluate, evaluateError, TestWorker } from './run-worker.js';

// WebSocketPair, WebSocket, MessageEvent/CloseEvent and 101 responses in real isolates;
// the host end of a socket through the same WorkerIsolate/SocketRegistry the agent uses.

describe('WebSocketPair and WebSocket inside the isolate', () => {
  it('makes two connected ends, iterable with Object.values and indexable', async () => {
    expect(await evaluate(`
      const pair = new WebSocketPair();
      const [client, server] = Object.values(pair);
      return {
        keys: Object.keys(pair), same: [client === pair[0], server === pair[1]],
        kinds: [client instanceof WebSocket, server instanceof EventTarget, Object.prototype.toString.call(server)],
        states: [client.readyState, server.readyState],
        constants: [WebSocket.CONNECTING, WebSocket.OPEN, WebSocket.CLOSING, WebSocket.CLOSED, server.OPEN],
        attrs: [server.url, server.protocol, server.extensions, server.binaryType, server.onmessage],
        names: [WebSocketPair.name, WebSocket.name, MessageEvent.name, CloseEvent.name, ErrorEvent.name],
      };
    `)).toEqual({
      keys: ['0', '1'], same: [true, true],
      kinds: [true, true, '[object WebSocket]'],
      states: [1, 1],
      constants: [0, 1, 2, 3, 1],
      attrs: [null, null, null, 'arraybuffer', null],
      names: ['WebSocketPair', 'WebSocket', 'MessageEvent', 'CloseEvent', 'ErrorEvent'],
    });
  });

  it('delivers text and binary messages between accepted ends, to listeners and onmessage', async () => {
    expect(await evaluate(`
      const [client, server] = Object.values(new WebSocketPair());
      const got = [];
      server.accept();
      client.accept();
      server.addEventListener('message', (e) => got.push(['listener', e.type, e instanceof MessageEvent, typeof e.data === 'string' ? e.data : [...new Uint8Array(e.data)]]));
      server.onmessage = (e) => got.push(['onmessage', e.data instanceof ArrayBuffer ? 'bytes' : e.data]);
      client.send('hello');
      client.send(new Uint8Array([1, 2, 3]));
      client.send(new Uint16Array([0x0201]).buffer);
      const sent = got.length;
      await new Promise((r) => setTimeout(r, 1));
      return { sent, got };
    `)).toEqual({
      sent: 0,
      got: [
        ['listener', 'message', true, 'hello'], ['onmessage', 'hello'],
        ['listener', 'message', true, [1, 2, 3]], ['onmessage', 'bytes'],
        ['listener', 'message', true, [1, 2]], ['onmessage', 'bytes'],
      ],
    });
  });

  it('queues messages until accept(), then delivers them in order', async () => {
    expect(await evaluate(`
      const [client, server] = Object.values(new WebSocketPair());
      client.accept();
      client.send('one');
      client.send('two');
      await new Promise((r) => setTimeout(r, 1));
      const got = [];
      server.accept();
      server.addEventListener('message', (e) => got.push(e.data));
      await new Promise((r) => setTimeout(r, 1));
      return got;
    `)).toEqual(['one', 'two']);
  });

  it('closes with a code and reason: the peer hears it, answers, and both end CLOSED', async () => {
    expect(await evaluate(`
      const [client, server] = Object.values(new WebSocketPair());
      client.accept();
      server.accept();
      const events = [];
      const record = (who) => (e) => events.push([who, e.type, e instanceof CloseEvent, e.code, e.reason, e.wasClean]);
      client.addEventListener('close', record('client'));
      server.onclose = record('server');
      server.close(4000, 'bye');
      const closing = server.readyState;
      await new Promise((r) => setTimeout(r, 1));
      let sendAfter;
      try { server.send('x'); } catch (e) { sendAfter = [e.constructor.name, e.message]; }
      server.close(4001, 'again'); // a second close does nothing
      return { closing, events, states: [client.readyState, server.readyState], sendAfter };
    `)).toEqual({
      closing: 2,
      events: [['client', 'close', true, 4000, 'bye', true], ['server', 'close', true, 4000, 'bye', true]],
      states: [3, 3],
      sendAfter: ['TypeError', "Can't call WebSocket send() after close()."],
    });
  });

  it('close() without a code is heard as 1005', async () => {
    expect(await evaluate(`
      const [client, server] = Object.values(new WebSocketPair());
      client.accept();
      server.accept();
      let code;
      client.addEventListener('close', (e) => { code = e.code; });
      server.close();
      await new Promise((r) => setTimeout(r, 1));
      return code;
    `)).toBe(1005);
  });

  it('refuses close codes and reasons a close frame cannot carry', async () => {
    expect(await evaluate(`
      const [, server] = Object.values(new WebSocketPair());
      server.accept();
      const out = [];
      for (const args of [[999], [1004], [1005], [1006], [1015], [2000], [5000], [1000, 'x'.repeat(124)], [undefined, 'reason']]) {
        try { server.close(...args); out.push('closed'); } catch (e) { out.push(e.constructor.name); }
      }
      return { out, state: server.readyState };
    `)).toEqual({ out: Array(9).fill('TypeError'), state: 1 });
  });

  it('refuses send and close before accept(), and outbound connections', async () => {
    expect(await evaluateError(`
      const [, server] = Object.values(new WebSocketPair());
      server.send('x');
    `)).toMatchObject({ type: 'TypeError', message: 'You must call accept() on this WebSocket before sending messages.' });
    expect(await evaluateError(`
      const [, server] = Object.values(new WebSocketPair());
      server.close(1000);
    `)).toMatchObject({ type: 'TypeError' });
    expect(await evaluateError(`new WebSocket('wss://example.com/')`)).toMatchObject({ type: 'TypeError' });
  });

  it('MessageEvent, CloseEvent and ErrorEvent have the DOM shapes', async () => {
    expect(await evaluate(`
      const m = new MessageEvent('message', { data: 'x' });
      const c = new CloseEvent('close', { code: 1001, reason: 'away', wasClean: true });
      const d = new CloseEvent('close');
      const e = new ErrorEvent('error', { message: 'boom' });
      return [m.type, m.data, c.code, c.reason, c.wasClean, d.code, d.reason, d.wasClean, e.message, e instanceof Event];
    `)).toEqual(['message', 'x', 1001, 'away', true, 0, '', false, 'boom', true]);
  });
});

describe('Responses with a webSocket', () => {
  it('allow status 101 only with a webSocket, and a webSocket only with 101', async () => {
    expect(await evaluateError(`new Response(null, { status: 101 })`)).toMatchObject({ type: 'RangeError' });
    expect(await evaluateError(`
      const [client] = Object.values(new WebSocketPair());
      new Response(null, { status: 200, webSocket: client });
    `)).toMatchObject({ type: 'RangeError' });
    expect(await evaluateError(`new Response(null, { status: 101, webSocket: {} })`)).toMatchObject({ type: 'TypeError' });
    expect(await evaluateError(`
      const [client] = Object.values(new WebSocketPair());
      client.accept();
      new Response(null, { status: 101, webSocket: client });
    `)).toMatchObject({ type: 'TypeError' });
    expect(await evaluateError(`
      const [client] = Object.values(new WebSocketPair());
      new Response('body', { status: 101, webSocket: client });
    `)).toMatchObject({ type: 'TypeError' });
    expect(await evaluate(`
      const [client] = Object.values(new WebSocketPair());
      const r = new Response(null, { status: 101, webSocket: client });
      return [r.status, r.webSocket === client, new Response('x').webSocket];
    `)).toEqual([101, true, null]);
  });
});

interface Connected {
  socket: HostSocket;
  messages: SocketData[];
  closed: Promise<[number, string]>;
  status: number;
}

async function connect(w: TestWorker, path = '/'): Promise<Connected> {
  const { id, response } = await w.start({ url: `http://example.com${path}`, headers: [['upgrade', 'websocket']] });
  await w.isolate.finish(id);
  const socket = w.socket(response.webSocket);
  const messages: SocketData[] = [];
  let onClose!: (v: [number, string]) => void;
  const closed = new Promise<[number, string]>((r) => { onClose = r; });
  socket.attach({ onMessage: (d) => messages.push(d), onClose: (code, reason) => onClose([code, reason]) });
  return { socket, messages, closed, status: response.status };
}

const text = (d: SocketData) => (typeof d === 'string' ? d : `bytes:${[...d].join(',')}`);

const ECHO = `
  export default {
    async fetch(request) {
      if (request.headers.get('Upgrade') !== 'websocket') return new Response('expected a websocket', { status: 426 });
      const [client, server] = Object.values(new WebSocketPair());
      server.accept();
      server.send('welcome');
      server.addEventListener('message', async (e) => {
        if (e.data === 'bye') { server.close(4000, 'bye to you'); return; }
        if (e.data === 'spin') for (;;) {}
        if (e.data === 'big') { try { server.send('x'.repeat(2000)); } catch (err) { server.send('refused: ' + err.constructor.name + ': ' + err.message); } return; }
        if (e.data === 'slow') { await new Promise((r) => setTimeout(r, 20)); server.send('slow done'); return; }
        server.send(typeof e.data === 'string' ? 'echo:' + e.data : e.data);
      });
      server.addEventListener('close', (e) => console.log('server closed', e.code, e.reason, e.wasClean));
      return new Response(null, { status: 101, webSocket: client });
    },
  };
`;

describe('a socket handed to the host', () => {
  let w: TestWorker | undefined;
  afterEach(() => { w?.dispose(); w = undefined; });

  it('carries messages both ways, in order, starting with what the worker sent before answering', async () => {
    w = await TestWorker.load(ECHO, { maxMessageBytes: 1000 });
    const c = await connect(w);
    expect(c.status).toBe(101);
    c.socket.send('one');
    c.socket.send(new Uint8Array([7, 8]));
    c.socket.send('two');
    await w.idle();
    expect(c.messages.map(text)).toEqual(['welcome', 'echo:one', 'bytes:7,8', 'echo:two']);
    expect(w.isolate.openSockets).toBe(1);
  });

  it('waits for the promises a listener returns before the next event', async () => {
    w = await TestWorker.load(ECHO);
    const c = await connect(w);
    c.socket.send('slow');
    c.socket.send('after');
    await w.idle();
    expect(c.messages.map(text)).toEqual(['welcome', 'slow done', 'echo:after']);
  });

  it('a close from the host reaches the worker, which answers it; the socket is then over', async () => {
    w = await TestWorker.load(ECHO);
    const c = await connect(w);
    c.socket.close(1000, 'done');
    await w.idle();
    expect(await c.closed).toEqual([1000, 'done']);
    expect(w.logs).toContainEqual({ level: 'log', message: 'server closed 1000 done true' });
    expect(w.isolate.openSockets).toBe(0);
    expect(w.sockets.size).toBe(0);
  });

  it('a close from the worker reaches the host, whose answer the worker hears', async () => {
    w = await TestWorker.load(ECHO);
    const c = await connect(w);
    c.socket.send('bye');
    await w.idle();
    expect(await c.closed).toEqual([4000, 'bye to you']);
    expect(w.isolate.openSockets).toBe(1);
    c.socket.close(4000, 'bye to you');
    await w.idle();
    expect(w.logs).toContainEqual({ level: 'log', message: 'server closed 4000 bye to you true' });
    expect(w.isolate.openSockets).toBe(0);
  });

  it('refuses a message from the worker over the size limit', async () => {
    w = await TestWorker.load(ECHO, { maxMessageBytes: 1000 });
    const c = await connect(w);
    c.socket.send('big');
    await w.idle();
    expect(c.messages.map(text)).toEqual(['welcome', 'refused: RangeError: WebSocket.send: the message is 2000 bytes; the limit is 1000']);
  });

  it('an event that burns its CPU budget disposes the isolate and closes its sockets with 1011', async () => {
    w = await TestWorker.load(ECHO, { limits: { cpuMsPerRequest: 50 } });
    const c = await connect(w);
    c.socket.send('spin');
    await w.idle();
    expect(w.eventErrors).toEqual([expect.stringMatching(/exceeded its CPU limit/)]);
    expect(w.isolate.dead).toBe(true);
    expect(w.disposals).toEqual(['cpu']);
    const [code] = await c.closed;
    expect(code).toBe(1011);
    expect(w.sockets.size).toBe(0);
  });

  it('events for an end not yet accepted wait for accept()', async () => {
    w = await TestWorker.load(`
      let server;
      export default {
        async fetch(request) {
          if (new URL(request.url).pathname === '/accept') {
            server.accept();
            server.addEventListener('message', (e) => server.send('late:' + e.data));
            return new Response('accepted');
          }
          const pair = new WebSocketPair();
          server = pair[1];
          return new Response(null, { status: 101, webSocket: pair[0] });
        },
      };
    `);
    const c = await connect(w);
    c.socket.send('early');
    await w.idle();
    expect(c.messages).toEqual([]);
    expect((await w.fetch({ url: 'http://example.com/accept' })).text).toBe('accepted');
    await w.idle();
    expect(c.messages).toEqual(['late:early']);
  });

  it('refuses to hand out the same end twice', async () => {
    w = await TestWorker.load(`
      const [client, server] = Object.values(new WebSocketPair());
      export default { fetch() { return new Response(null, { status: 101, webSocket: client }); } };
    `);
    const first = await w.start();
    await w.isolate.finish(first.id);
    expect(first.response.status).toBe(101);
    await expect(w.start()).rejects.toThrow(/already returned in a Response/);
  });
});
