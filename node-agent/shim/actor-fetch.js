// stub.fetch() of an actor binding (the DurableObjectStub in durable.js calls this). Bodies
// stream both ways, as fetch()'s do (web/fetch.js), on the actor call's own handle: a
// request body that is a ReadableStream (or bytes over WHOLE_BODY_BYTES) goes with
// host.actorWrite one chunk at a time (each write settles once the host can take more:
// the actor reads it as it arrives); the actor's response body, unless the host hands it
// over whole, is read with host.actorRead as the caller reads it, and cancelling it
// (reader.cancel(), or the caller's request ending) reaches the actor's stream through
// host.actorCancel. See node-agent/bindings/actor-binding.ts for the host's side.
//
// Runs at snapshot time: nothing here calls a host callback until used.
import { host } from './host.js';
import { Request, requestBody, requestSignal } from './web/request.js';
import { Response, fetchedResponse } from './web/response.js';
import { foreignSocket } from './web/websocket.js';
import { headerList } from './web/headers.js';
import { takeBody } from './web/body.js';
import { utf8Encode } from './web/encoding.js';
import { hostPulledStream } from './web/streams.js';
import { pumpBody } from './web/fetch.js';
import { hostOutcome, messageOf, toArrayBuffer } from './web/util.js';
import { ArrayMap } from './web/primordials.js';

/** Must equal ACTOR_WHOLE_BODY_BYTES in node-agent/abi/bridge.ts. */
const WHOLE_BODY_BYTES = 32 * 1024 * 1024;
const STREAMED = 1;
const UInt8 = Uint8Array;
const TypeErrorCtor = TypeError;
const ignore = () => {};

/** The host's handle of an actor call; unique within the isolate. */
let nextId = 1;

const cancelOnHost = (id, reason) => {
  host.actorCancel(id, reason).then(undefined, ignore);
};

/** Sends a streamed request body; the host's refusal (the actor's request is over) stops it and cancels the source. */
const pump = (id, source) => pumpBody(source, 'stub.fetch()', (chunk) => host.actorWrite(id, chunk), (reason) => cancelOnHost(id, reason));

export async function actorStubFetch(binding, hex, name, input, init) {
  const request = new Request(input, init);
  const signal = requestSignal(request);
  if (signal?.aborted) throw signal.reason;
  let source = takeBody(requestBody(request), `env.${binding}.get(id).fetch()`);
  if (typeof source === 'string') source = utf8Encode(source);
  const whole = source instanceof UInt8 && source.byteLength <= WHOLE_BODY_BYTES;
  const id = nextId++;
  const pending = hostOutcome(host.actorFetch(binding, hex, name, {
    id,
    url: request.url,
    method: request.method,
    headers: ArrayMap(headerList(request.headers), (e) => [e[0], e[1]]),
    body: source === null ? null : whole ? toArrayBuffer(source) : STREAMED,
  }));
  if (source !== null && !whole) pump(id, source);
  let result;
  try {
    result = await pending;
  } catch (err) {
    if (signal?.aborted) cancelOnHost(id, 'the request was aborted');
    throw err;
  }
  // The actor accepted a WebSocket: the client end comes back as a host socket the
  // worker returns in its own 101 response.
  if (result.webSocket !== undefined) {
    return new Response(null, { status: 101, statusText: result.statusText, headers: result.headers, webSocket: foreignSocket(result.webSocket) });
  }
  let body = result.body;
  if (body === 'stream') {
    body = hostPulledStream(
      () => host.actorRead(id),
      (err) => (signal?.aborted ? signal.reason : new TypeErrorCtor(`reading the actor's response body failed: ${messageOf(err)}`)),
      () => cancelOnHost(id, 'the caller cancelled the response body'),
    );
    signal?.addEventListener('abort', () => cancelOnHost(id, 'the request was aborted'), { once: true });
  }
  return fetchedResponse({ ...result, body, url: request.url, redirected: false }, request.method);
}

/**
 * An internal call on the actor fetch path (JS RPC, rpc.js): `body` (bytes, at most
 * WHOLE_BODY_BYTES) crosses whole; resolves with the answer's status and body as text.
 */
export async function actorInternalCall(binding, hex, name, { url, method, headers, body }) {
  const id = nextId++;
  const result = await hostOutcome(host.actorFetch(binding, hex, name, { id, url, method, headers, body: toArrayBuffer(body) }));
  let out = result.body;
  if (out === 'stream') {
    out = hostPulledStream(
      () => host.actorRead(id),
      (err) => new TypeErrorCtor(`reading the actor's answer failed: ${messageOf(err)}`),
      () => cancelOnHost(id, 'the caller cancelled the answer'),
    );
  }
  return { status: result.status, text: await fetchedResponse({ ...result, body: out, url, redirected: false }, method).text() };
}
