// fetch(): subrequests, performed by the host (which counts them against the worker's
// limits.subrequests and checks each connection against the worker's egress policy).
// Bodies stream both ways, so neither side holds a whole large body: a request body over
// WHOLE_BODY_BYTES, or one that is a ReadableStream, is sent with host.fetchWrite one chunk
// at a time (each call settles once the host can take more); a response body the host
// does not hand over whole is read with host.fetchRead as the worker reads it.
import { host } from '../host.js';
import { Request, requestBody, requestSignal } from './request.js';
import { fetchedResponse } from './response.js';
import { headerList } from './headers.js';
import { takeBody } from './body.js';
import { utf8Encode } from './encoding.js';
import { chunkReader, hostPulledStream } from './streams.js';
import { hostOutcome, messageOf, toArrayBuffer } from './util.js';
import { ArrayMap } from './primordials.js';

/** Must equal SUBREQUEST_WHOLE_BODY_BYTES in node-agent/abi/bridge.ts. */
const WHOLE_BODY_BYTES = 256 * 1024;
/** A byte body over WHOLE_BODY_BYTES crosses in pieces of this size. */
const CHUNK_BYTES = 64 * 1024;
const STREAMED = 1;
const UInt8 = Uint8Array;
const TypeErrorCtor = TypeError;

/** The host's handle of a subrequest; unique within the isolate. */
let nextId = 1;


const ignore = () => {};
const cancelOnHost = (id, reason) => {
  host.fetchCancel(id, reason).then(undefined, ignore);
};

function untilAborted(promise, signal) {
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then((v) => {
      signal.removeEventListener('abort', onAbort);
      resolve(v);
    }, (e) => {
      signal.removeEventListener('abort', onAbort);
      reject(e);
    });
  });
}

/**
 * Sends a streamed request body to the host: the chunks of a ReadableStream, or of a byte
 * body too large to cross whole. Each write waits for the host, which is the backpressure.
 * When the host refuses a write (the subrequest failed, or a redirect dropped the body)
 * the pump stops and cancels the source; the fetch itself reports any failure. When the
 * source fails, the subrequest is cancelled.
 */
export async function pumpBody(source, what, write, cancel) {
  const reader = source instanceof UInt8 ? null : chunkReader(source, what);
  let at = 0;
  for (;;) {
    let chunk;
    try {
      if (reader === null) {
        chunk = at < source.byteLength ? source.subarray(at, at + CHUNK_BYTES) : null;
        at += CHUNK_BYTES;
      } else {
        chunk = await reader.next();
      }
    } catch (err) {
      cancel(`the request body failed: ${messageOf(err)}`);
      return;
    }
    if (chunk !== null && chunk.byteLength === 0) continue;
    try {
      await hostOutcome(write(chunk === null ? null : toArrayBuffer(chunk)));
    } catch (err) {
      reader?.cancel(err);
      return;
    }
    if (chunk === null) return;
  }
}

const pump = (id, source) => pumpBody(source, 'fetch', (chunk) => host.fetchWrite(id, chunk), (reason) => cancelOnHost(id, reason));

/** A response body the host streams: pulled one chunk at a time as the worker reads. */
function responseStream(id, signal) {
  return hostPulledStream(
    () => host.fetchRead(id),
    (err) => (signal?.aborted ? signal.reason : new TypeErrorCtor(`reading the response body failed: ${messageOf(err)}`)),
    () => cancelOnHost(id, 'the response body was cancelled'),
  );
}

export async function fetch(input, init = undefined) {
  const request = new Request(input, init);
  const signal = requestSignal(request);
  if (signal?.aborted) throw signal.reason;
  let source = takeBody(requestBody(request), 'fetch');
  if (typeof source === 'string') source = utf8Encode(source);
  const whole = source instanceof UInt8 && source.byteLength <= WHOLE_BODY_BYTES;
  const url = request.url;
  const id = nextId++;
  const pending = hostOutcome(host.fetch({
    id,
    url,
    method: request.method,
    headers: ArrayMap(headerList(request.headers), (e) => [e[0], e[1]]),
    body: source === null ? null : whole ? toArrayBuffer(source) : STREAMED,
    redirect: request.redirect,
  }));
  if (source !== null && !whole) pump(id, source);
  let result;
  try {
    result = await (signal ? untilAborted(pending, signal) : pending);
  } catch (err) {
    if (signal?.aborted && err === signal.reason) {
      pending.then(undefined, ignore);
      cancelOnHost(id, 'the request was aborted');
      throw err;
    }
    throw new TypeErrorCtor(`fetch ${url} failed: ${messageOf(err)}`);
  }
  let body = result.body;
  if (body === 'stream') {
    body = responseStream(id, signal);
    // Aborting after the response arrived ends its body with the abort reason.
    signal?.addEventListener('abort', () => cancelOnHost(id, 'the request was aborted'), { once: true });
  }
  return fetchedResponse({ ...result, body }, request.method);
}
