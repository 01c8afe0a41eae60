// The Durable Objects WebSocket Hibernation API inside an actor isolate:
//
//   state.acceptWebSocket(ws, tags?)      the server end of a WebSocketPair is handed to
//                                         the agent, which holds the connection, its tags
//                                         and attachment while the isolate is evicted
//   state.getWebSockets(tag?) / getTags(ws)
//   state.setWebSocketAutoResponse(pair) / getWebSocketAutoResponse()
//   state.getWebSocketAutoResponseTimestamp(ws)
//   state.setHibernatableWebSocketEventTimeout(ms) / getHibernatableWebSocketEventTimeout()
//   ws.serializeAttachment(v) / ws.deserializeAttachment()
//   webSocketMessage(ws, message) / webSocketClose(ws, code, reason, wasClean) /
//   webSocketError(ws, error) on the class, called by actorEvent('ws', event).
//
// Everything that must outlive the isolate lives on the host (node-agent/actors/
// hibernation.ts), reached with the one `hibernation(op, a, b)` callback; the isolate keeps
// only the WebSocket objects of this activation, by the host's socket id, so a handler gets
// the same object getWebSockets() returns. Error wording is workerd's (api/actor-state.c++).
//
// Runs at snapshot time: nothing here calls a host callback until used.
import { host } from './host.js';
import { DOMException, messageOf } from './web/util.js';
import { hibernatable } from './web/websocket.js';
import { MapDelete, MapGet, MapSet } from './web/primordials.js';

const ErrorCtor = Error;
const TypeErrorCtor = TypeError;
const StringCtor = String;
const DateCtor = Date;
const isArray = Array.isArray;
const freeze = Object.freeze;

/** workerd's limits (api/actor-state.h). */
const MAX_TAGS = 10;
const MAX_TAG_LENGTH = 256;

export class WebSocketRequestResponsePair {
  #request;
  #response;

  constructor(request, response) {
    if (arguments.length < 2) throw new TypeErrorCtor("Failed to construct 'WebSocketRequestResponsePair': 2 arguments required.");
    this.#request = StringCtor(request);
    this.#response = StringCtor(response);
  }

  get request() { return this.#request; }
  get response() { return this.#response; }
}

/** The host callback; isolated-vm's clone failures become DataCloneErrors. */
function call(op, a, b, c) {
  try {
    return host.hibernation(op, a, b, c);
  } catch (err) {
    const message = messageOf(err);
    if (/could not be cloned/.test(message)) throw new DOMException(message, 'DataCloneError');
    throw err;
  }
}

/** This activation's hibernatable sockets, by the host's id. */
const sockets = new Map();

function opsFor(id) {
  return freeze({
    id,
    send: (data) => call('send', id, data),
    close: (code, reason) => call('close', id, code, reason),
    attach: (value) => call('attach', id, value),
    attachment: () => {
      const v = call('attachment', id);
      return v === undefined ? null : v;
    },
  });
}

function socketFor(id) {
  let ws = MapGet(sockets, id);
  if (ws === undefined) {
    ws = hibernatable.revive(opsFor(id));
    MapSet(sockets, id, ws);
  }
  return ws;
}

function idOf(ws, what) {
  const ops = hibernatable.opsOf(ws);
  if (ops === null) throw new TypeErrorCtor(`${what}: the WebSocket was not accepted with state.acceptWebSocket()`);
  return ops.id;
}

function distinctTags(tags) {
  if (tags === undefined || tags === null) return [];
  if (!isArray(tags)) throw new TypeErrorCtor("Failed to execute 'acceptWebSocket' on 'DurableObjectState': parameter 2 is not of type 'Array'.");
  const seen = new Set();
  for (let i = 0; i < tags.length; i++) {
    const tag = StringCtor(tags[i]);
    if (seen.size >= MAX_TAGS) throw new ErrorCtor(`a Hibernatable WebSocket cannot have more than ${MAX_TAGS} tags`);
    if (tag.length > MAX_TAG_LENGTH) throw new ErrorCtor(`"${tag}" is longer than the max tag length (${MAX_TAG_LENGTH} characters).`);
    seen.add(tag);
  }
  return [...seen];
}

/** The hibernation methods of `state` (spread into it by actorInit). */
export function hibernationState() {
  return {
    acceptWebSocket(ws, tags = undefined) {
      const list = distinctTags(tags);
      hibernatable.adopt(ws, () => {
        const id = call('accept', list);
        MapSet(sockets, id, ws);
        return opsFor(id);
      });
    },
    getWebSockets(tag = undefined) {
      const ids = call('list', tag === undefined || tag === null ? null : StringCtor(tag));
      const out = [];
      for (let i = 0; i < ids.length; i++) out.push(socketFor(ids[i]));
      return out;
    },
    getTags(ws) {
      return call('tags', idOf(ws, 'state.getTags()'));
    },
    setWebSocketAutoResponse(pair = undefined) {
      if (pair === undefined || pair === null) {
        call('autoSet', null, null);
        return;
      }
      if (!(pair instanceof WebSocketRequestResponsePair)) {
        throw new TypeErrorCtor("Failed to execute 'setWebSocketAutoResponse' on 'DurableObjectState': parameter 1 is not of type 'WebSocketRequestResponsePair'.");
      }
      call('autoSet', pair.request, pair.response);
    },
    getWebSocketAutoResponse() {
      const r = call('autoGet');
      return r === null ? null : new WebSocketRequestResponsePair(r[0], r[1]);
    },
    getWebSocketAutoResponseTimestamp(ws) {
      const t = call('autoTime', idOf(ws, 'state.getWebSocketAutoResponseTimestamp()'));
      return t === null ? null : new DateCtor(t);
    },
    setHibernatableWebSocketEventTimeout(timeoutMs = undefined) {
      const ms = timeoutMs === undefined || timeoutMs === null ? 0 : Number(timeoutMs);
      if (!(ms >= 0)) throw new TypeErrorCtor('setHibernatableWebSocketEventTimeout(): the timeout must be a number of milliseconds');
      if (ms > 604800 * 1000) throw new ErrorCtor('Event timeout should not exceed 604800000 ms.');
      call('timeoutSet', ms === 0 ? null : Math.floor(ms));
    },
    getHibernatableWebSocketEventTimeout() {
      return call('timeoutGet');
    },
  };
}

/**
 * actorEvent('ws', event): one event of a hibernatable socket for the instance's handler.
 * event: { socket, type: 'message' | 'close' | 'error', data, code, reason, wasClean, message }.
 * Returns what the handler threw, as text, or null.
 */
export async function hibernationEvent(instance, className, event, errorText) {
  const id = Number(event.socket);
  const ws = socketFor(id);
  const type = StringCtor(event.type);
  let handler;
  let args;
  if (type === 'message') {
    handler = 'webSocketMessage';
    args = [ws, event.data];
  } else if (type === 'close') {
    hibernatable.closedIn(ws);
    MapDelete(sockets, id);
    handler = 'webSocketClose';
    args = [ws, Number(event.code), StringCtor(event.reason), !!event.wasClean];
  } else {
    MapDelete(sockets, id);
    handler = 'webSocketError';
    args = [ws, new ErrorCtor(StringCtor(event.message))];
  }
  if (typeof instance[handler] !== 'function') {
    // Without a handler the event is dropped, as workerd does for a class that does not define it.
    return type === 'message' ? `the DurableActor class ${className} has no webSocketMessage() handler` : null;
  }
  try {
    await instance[handler](...args);
  } catch (err) {
    return `${handler}() threw: ${errorText(err)}`;
  }
  return null;
}
