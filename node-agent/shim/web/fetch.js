// fetch(): subrequests, performed by the host (which counts them against the worker's
// limits.subrequests) with the whole request body and whole response body copied over.
import { host } from '../host.js';
import { Request, requestBody, requestSignal } from './request.js';
import { fetchedResponse } from './response.js';
import { headerList } from './headers.js';
import { bodyBytes } from './body.js';
import { hostOutcome, toArrayBuffer } from './util.js';
import { ArrayMap } from './primordials.js';

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

export async function fetch(input, init = undefined) {
  const request = new Request(input, init);
  const signal = requestSignal(request);
  if (signal?.aborted) throw signal.reason;
  const bytes = await bodyBytes(requestBody(request), 'fetch');
  const url = request.url;
  const pending = hostOutcome(host.fetch({
    url,
    method: request.method,
    headers: ArrayMap(headerList(request.headers), (e) => [e[0], e[1]]),
    body: bytes === null ? null : toArrayBuffer(bytes),
    redirect: request.redirect,
  }));
  let result;
  try {
    result = await (signal ? untilAborted(pending, signal) : pending);
  } catch (err) {
    if (signal?.aborted && err === signal.reason) {
      pending.catch(() => {}); // the host finishes the subrequest; its outcome no longer matters
      throw err;
    }
    throw new TypeError(`fetch ${url} failed: ${err instanceof Error ? err.message : String(err)}`);
  }
  return fetchedResponse(result, request.method);
}
