// WebSocketPair, WebSocket, MessageEvent, CloseEvent, ErrorEvent: the Workers way of
// accepting WebSockets.
//
//   const [client, server] = Object.values(new WebSocketPair());
//   server.accept();
//   server.addEventListener('message', (e) => server.send(e.data));
//   return new Response(null, { status: 101, webSocket: client });
//
// Both ends start in the isolate, joined to each other: what one sends the other
// receives (asynchronously). When a Response hands the client end to the runtime
// (transferToHost, called by the runtime as the response leaves), the server end is
// joined to the host instead: its sends become host.socketSend/socketClose calls, and
// the host's events for it come in through socketEvent (__edgeSocketEvent, see
// node-agent/bridge.ts). Events wait until accept() is called.
import { host } from '../host.js';
import { reportError } from './console.js';
import { Event, EventTarget, collectListenerResults } from './event.js';
import { INTERNAL, isBufferSource, bytesOf, isObject, requireArgs, toArrayBuffer } from './util.js';
import { ArrayPush, ArrayShift, MapDelete, MapGet, MapSet, ReflectApply } from './primordials.js';
import { structuredClone } from './structured-clone.js';

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;
const MAX_REASON_BYTES = 123;

const resolved = Promise.resolve();
const promiseThen = Promise.prototype.then;
const allSettled = Promise.allSettled.bind(Promise);
const later = (fn) => ReflectApply(promiseThen, resolved, [fn]);
const dispatch = EventTarget.prototype.dispatchEvent;

export class MessageEvent extends Event {
  #data;

  constructor(type, init = undefined) {
    requireArgs(arguments.length, 1, 'MessageEvent');
    super(type, init);
    this.#data = init?.data ?? null;
  }

  get data() { return this.#data; }
}

export class CloseEvent extends Event {
  #code;
  #reason;
  #wasClean;

  constructor(type, init = undefined) {
    requireArgs(arguments.length, 1, 'CloseEvent');
    super(type, init);
    this.#code = init?.code === undefined ? 0 : Number(init.code) & 0xffff;
    this.#reason = init?.reason === undefined ? '' : String(init.reason);
    this.#wasClean = Boolean(init?.wasClean);
  }

  get code() { return this.#code; }
  get reason() { return this.#reason; }
  get wasClean() { return this.#wasClean; }
}

export class ErrorEvent extends Event {
  #message;
  #error;

  constructor(type, init = undefined) {
    requireArgs(arguments.length, 1, 'ErrorEvent');
    super(type, init);
    this.#message = init?.message === undefined ? '' : String(init.message);
    this.#error = init?.error;
  }

  get message() { return this.#message; }
  get error() { return this.#error; }
  get filename() { return ''; }
  get lineno() { return 0; }
  get colno() { return 0; }
}

/** Server ends joined to the host, by the number the host knows them by. */
const hostSockets = new Map();
let nextHostId = 1;

function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) { n += 4; i++; }
    else n += 3;
  }
  return n;
}

/** A code a WebSocket close frame may carry (RFC 6455 7.4). */
const isCloseCode = (c) => (c >= 1000 && c <= 1014 && c !== 1004 && c !== 1005 && c !== 1006) || (c >= 3000 && c <= 4999);

let isWebSocket;
let checkFree;
let transfer;
let hostEvent;
let join;
let makeForeign;
let adoptHibernatable;
let reviveHibernatable;
let hibernationOf;
let markClosedIn;

export class WebSocket extends EventTarget {
  #accepted = false;
  /** The other end, while it is in this isolate. */
  #peer = null;
  /** The host's number for this end once its other end left in a Response; 0 otherwise. */
  #hostId = 0;
  /** This end was handed to the runtime in a Response. */
  #transferred = false;
  /**
   * For an end the host made (the client end of a socket an actor accepted, possibly on
   * another agent): the host's registry id. It can only be returned in a Response.
   */
  #foreign = 0;
  #closedOut = false;
  #closedIn = false;
  /** The host stopped carrying this end's messages (its client fell too far behind): sends are dropped, as workerd does. */
  #outAborted = false;
  /** Events that arrived and are not dispatched yet (all of them until accept()). */
  #queue = [];
  #flushing = false;
  #handlers = { open: null, message: null, close: null, error: null };
  /**
   * A server end accepted with state.acceptWebSocket(): the agent holds the connection
   * (node-agent/shim/hibernation.js makes these ops), sends and closes go to it, and its
   * events reach the actor's webSocketMessage/Close/Error handlers, not listeners.
   */
  #hib = null;
  /** serializeAttachment() of a socket that is not hibernatable: kept here. */
  #attachment = undefined;

  constructor(url = undefined) {
    if (url !== INTERNAL) {
      throw new TypeError('WebSocket: connecting out of a worker (new WebSocket(url)) is not supported; accept connections with a WebSocketPair');
    }
    super();
  }

  get readyState() {
    if (this.#transferred || (this.#closedOut && this.#closedIn)) return CLOSED;
    if (this.#closedOut || this.#closedIn) return CLOSING;
    return OPEN;
  }
  get url() { return null; }
  get protocol() { return null; }
  get extensions() { return null; }
  get binaryType() { return 'arraybuffer'; }
  set binaryType(v) {
    if (String(v) !== 'arraybuffer') throw new TypeError('WebSocket.binaryType: only "arraybuffer" is supported');
  }

  get onopen() { return this.#handlers.open; }
  set onopen(v) { this.#setHandler('open', v); }
  get onmessage() { return this.#handlers.message; }
  set onmessage(v) { this.#setHandler('message', v); }
  get onclose() { return this.#handlers.close; }
  set onclose(v) { this.#setHandler('close', v); }
  get onerror() { return this.#handlers.error; }
  set onerror(v) { this.#setHandler('error', v); }

  #setHandler(type, v) {
    const listening = this.#handlers[type] !== null;
    this.#handlers[type] = typeof v === 'function' ? v : null;
    if (!listening && this.#handlers[type] !== null) {
      // One listener per attribute, registered when it is first set (as the DOM does).
      this.addEventListener(type, (event) => {
        const fn = this.#handlers[type];
        return fn === null ? undefined : ReflectApply(fn, this, [event]);
      });
    }
  }

  serializeAttachment(value) {
    requireArgs(arguments.length, 1, 'WebSocket.serializeAttachment');
    if (this.#hib !== null) this.#hib.attach(value);
    else this.#attachment = value === undefined ? undefined : structuredClone(value);
  }

  deserializeAttachment() {
    if (this.#hib !== null) return this.#hib.attachment();
    return this.#attachment === undefined ? null : structuredClone(this.#attachment);
  }

  accept() {
    if (this.#foreign !== 0) throw new TypeError('WebSocket.accept(): this socket is connected to a Durable Object; return it in a Response (new Response(null, { status: 101, webSocket }))');
    if (this.#transferred) throw new TypeError('WebSocket.accept(): this end was returned in a Response; accept the other end of the WebSocketPair');
    if (this.#accepted) return;
    this.#accepted = true;
    // Listeners added right after accept() still hear what was waiting.
    if (this.#queue.length > 0) later(() => this.#flush());
  }

  send(message) {
    requireArgs(arguments.length, 1, 'WebSocket.send');
    if (this.#transferred) throw new TypeError('WebSocket.send(): this end was returned in a Response and belongs to the client now');
    if (!this.#accepted) throw new TypeError('You must call accept() on this WebSocket before sending messages.');
    if (this.#closedOut) throw new TypeError("Can't call WebSocket send() after close().");
    let data;
    if (typeof message === 'string') data = message;
    else if (isBufferSource(message)) data = toArrayBuffer(bytesOf(message, 'WebSocket.send'));
    else data = String(message);
    if (this.#hib !== null) {
      this.#hib.send(data);
    } else if (this.#hostId !== 0) {
      if (!this.#outAborted && host.socketSend(this.#hostId, data) === false) this.#outAborted = true;
    } else {
      this.#toPeer({ type: 'message', data });
    }
  }

  close(code = undefined, reason = undefined) {
    if (this.#transferred) throw new TypeError('WebSocket.close(): this end was returned in a Response and belongs to the client now');
    let c = 1005;
    if (code !== undefined) {
      c = Number(code);
      if (!Number.isInteger(c) || !isCloseCode(c)) throw new TypeError(`Invalid WebSocket close code: ${String(code)}.`);
    }
    const r = reason === undefined ? '' : String(reason);
    if (r !== '' && code === undefined) throw new TypeError('WebSocket.close(): a reason needs a code');
    if (utf8Length(r) > MAX_REASON_BYTES) throw new TypeError(`WebSocket.close(): the reason is over ${MAX_REASON_BYTES} bytes of UTF-8`);
    if (!this.#accepted) throw new TypeError('You must call accept() on this WebSocket before closing it.');
    if (this.#closedOut) return;
    if (this.#hib !== null) {
      this.#closedOut = true;
      this.#hib.close(c, r);
      return;
    }
    this.#sendClose(c, r);
  }

  #sendClose(code, reason) {
    this.#closedOut = true;
    if (this.#hostId !== 0) {
      host.socketClose(this.#hostId, code, reason);
      if (this.#closedIn) this.#leaveHost();
    } else {
      this.#toPeer({ type: 'close', code, reason });
    }
  }

  /** To the other end in this isolate, asynchronously; to the host if that end left in a Response meanwhile. */
  #toPeer(event) {
    const peer = this.#peer;
    if (peer === null) return;
    later(() => {
      if (!peer.#transferred) peer.#arrive(event, false);
      else if (this.#hostId !== 0 && event.type === 'message') host.socketSend(this.#hostId, event.data);
      else if (this.#hostId !== 0) host.socketClose(this.#hostId, event.code, event.reason);
    });
  }

  #leaveHost() {
    MapDelete(hostSockets, this.#hostId);
  }

  /** An event from the other end; dispatched now (host events on an accepted end) or queued. */
  #arrive(event, now) {
    if (this.#closedIn) return;
    if (event.type === 'close') {
      this.#closedIn = true;
      // A host end answers the close at once, so the host can forget the socket even if
      // the worker never accepts this end; a local pair answers when the event is seen.
      if (this.#hostId !== 0) {
        if (!this.#closedOut) this.#sendClose(event.code === 1005 || event.code === 1006 ? 1000 : event.code, event.reason);
        else this.#leaveHost();
      }
    }
    ArrayPush(this.#queue, event);
    if (!this.#accepted) return;
    if (now) this.#flush();
    else later(() => this.#flush());
  }

  #flush() {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      while (this.#queue.length > 0) {
        const event = ArrayShift(this.#queue);
        if (event.type === 'message') {
          ReflectApply(dispatch, this, [new MessageEvent('message', { data: event.data })]);
        } else if (event.type === 'close') {
          if (!this.#closedOut) this.#sendClose(event.code === 1005 || event.code === 1006 ? 1000 : event.code, event.reason);
          ReflectApply(dispatch, this, [new CloseEvent('close', { code: event.code, reason: event.reason, wasClean: event.code !== 1006 })]);
        } else {
          ReflectApply(dispatch, this, [new ErrorEvent('error', { message: event.message })]);
        }
      }
    } finally {
      this.#flushing = false;
    }
  }

  static {
    isWebSocket = (v) => isObject(v) && #peer in v;
    join = (a, b) => { a.#peer = b; b.#peer = a; };
    checkFree = (ws) => {
      if (ws.#transferred) throw new TypeError('This WebSocket was already returned in a Response.');
      if (ws.#foreign !== 0) return;
      if (ws.#accepted) throw new TypeError("Can't return a WebSocket in a Response after calling accept() on it; return the other end of the WebSocketPair.");
      if (ws.#peer === null) throw new TypeError('This WebSocket is not one end of a WebSocketPair.');
    };
    transfer = (client) => {
      checkFree(client);
      // The host already has this one: a negative number names it by its registry id.
      if (client.#foreign !== 0) { client.#transferred = true; return -client.#foreign; }
      const server = client.#peer;
      const id = nextHostId++;
      client.#transferred = true;
      client.#peer = null;
      server.#peer = null;
      server.#hostId = id;
      MapSet(hostSockets, id, server);
      // What the server end sent before the response left was waiting for the client
      // end: it goes to the host now, first.
      const backlog = client.#queue;
      client.#queue = [];
      for (let i = 0; i < backlog.length; i++) {
        const e = backlog[i];
        if (e.type === 'message') host.socketSend(id, e.data);
        else if (e.type === 'close') {
          host.socketClose(id, e.code, e.reason);
          if (server.#closedIn) server.#leaveHost();
        }
      }
      return id;
    };
    hostEvent = (ws, event) => ws.#arrive(event, true);
    makeForeign = (id) => { const ws = new WebSocket(INTERNAL); ws.#foreign = id; return ws; };
    // state.acceptWebSocket(server): checks as workerd does, then `makeOps()` (which asks the
    // host for the socket's id) and joins the client end to the host under that id.
    adoptHibernatable = (server, makeOps) => {
      if (!isWebSocket(server)) throw new TypeError("Failed to execute 'acceptWebSocket' on 'DurableObjectState': parameter 1 is not of type 'WebSocket'.");
      if (server.#accepted) throw new Error('Cannot call `acceptWebSocket()` if the WebSocket was already accepted via `accept()`');
      const client = server.#peer;
      if (server.#transferred || server.#foreign !== 0 || client === null || client.#transferred || client.#accepted) {
        throw new Error('Cannot call `acceptWebSocket()` on this WebSocket because its pair has already been accepted or used in a Response.');
      }
      const ops = makeOps();
      client.#peer = null;
      server.#peer = null;
      client.#foreign = ops.id;
      server.#accepted = true;
      server.#hib = ops;
      return server;
    };
    reviveHibernatable = (ops) => {
      const ws = new WebSocket(INTERNAL);
      ws.#accepted = true;
      ws.#hib = ops;
      return ws;
    };
    hibernationOf = (ws) => (isWebSocket(ws) ? ws.#hib : null);
    markClosedIn = (ws) => { ws.#closedIn = true; };
  }
}

// READY_STATE_*: workerd's names for the same values (partyserver compares readyState with them).
for (const [name, value] of [['CONNECTING', CONNECTING], ['OPEN', OPEN], ['CLOSING', CLOSING], ['CLOSED', CLOSED],
  ['READY_STATE_CONNECTING', CONNECTING], ['READY_STATE_OPEN', OPEN], ['READY_STATE_CLOSING', CLOSING], ['READY_STATE_CLOSED', CLOSED]]) {
  Object.defineProperty(WebSocket, name, { value, enumerable: true });
  Object.defineProperty(WebSocket.prototype, name, { value, enumerable: true });
}

export class WebSocketPair {
  constructor() {
    const client = new WebSocket(INTERNAL);
    const server = new WebSocket(INTERNAL);
    join(client, server);
    Object.defineProperty(this, 0, { value: client, enumerable: true });
    Object.defineProperty(this, 1, { value: server, enumerable: true });
  }
}

export { isWebSocket };

/** For node-agent/shim/hibernation.js: see adoptHibernatable and reviveHibernatable above. */
export const hibernatable = {
  adopt: (server, makeOps) => adoptHibernatable(server, makeOps),
  revive: (ops) => reviveHibernatable(ops),
  opsOf: (ws) => hibernationOf(ws),
  closedIn: (ws) => markClosedIn(ws),
};

/** For the runtime: the client end of a socket the host holds (an actor's), by registry id. */
export const foreignSocket = (id) => makeForeign(id);

/** Validates a Response's webSocket option (the end must still be free to hand out). */
export function checkResponseSocket(ws) {
  if (!isWebSocket(ws)) throw new TypeError('Response: webSocket must be a WebSocket (one end of a WebSocketPair)');
  checkFree(ws);
}

/** For the runtime: hands a Response's client end to the host; returns the server end's host id. */
export const transferToHost = (ws) => transfer(ws);

/**
 * For the runtime (__edgeSocketEvent): an event from the host for the server end it
 * knows as `id`. type: "message" (data: string | ArrayBuffer), "close" (code, reason)
 * or "error" (data: message). Resolves once the promises the listeners returned have
 * settled, so the host runs a socket's events one at a time, as it runs requests.
 */
export async function socketEvent(id, type, data, code, reason) {
  const ws = MapGet(hostSockets, id);
  if (ws === undefined) return;
  let event;
  if (type === 'message') event = { type: 'message', data };
  else if (type === 'close') event = { type: 'close', code: Number(code), reason: String(reason) };
  else event = { type: 'error', message: String(data) };
  const results = [];
  collectListenerResults(results, () => hostEvent(ws, event));
  if (results.length === 0) return;
  const outcomes = await allSettled(results);
  for (let i = 0; i < outcomes.length; i++) {
    if (outcomes[i].status === 'rejected') reportError(outcomes[i].reason);
  }
}
