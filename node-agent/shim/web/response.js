// Response.
import { parseURL } from './url.js';
import { Headers, appendHeader, copyHeaders, hasHeader, headerList, sortAndCombine, trustedHeaders } from './headers.js';
import { cloneBody, extractBody, mixinBody, newBody, takeBody, textSource } from './body.js';
import { INTERNAL, isObject } from './util.js';
import { ArrayIncludes } from './primordials.js';
import { checkResponseSocket, transferToHost } from './websocket.js';

export const NULL_BODY_STATUSES = [101, 103, 204, 205, 304];
const REDIRECT_STATUSES = [301, 302, 303, 307, 308];
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/;

// WebIDL's unsigned short conversion, so "201" and 201.7 mean 201 as in browsers.
function unsignedShort(v) {
  const n = Math.trunc(Number(v));
  return Number.isFinite(n) ? ((n % 65536) + 65536) % 65536 : 0;
}

let partsOf;
let bodyOfResponse;
let socketOf;

export class Response {
  #status;
  #statusText;
  #headers;
  #type;
  #url;
  #redirected;
  #body;
  #webSocket = null;

  constructor(body = null, init = undefined) {
    if (body === INTERNAL) {
      this.#status = init.status;
      this.#statusText = init.statusText;
      this.#headers = init.headers;
      this.#type = init.type;
      this.#url = init.url;
      this.#redirected = init.redirected;
      this.#body = init.body;
      this.#webSocket = init.webSocket ?? null;
      return;
    }
    if (init !== undefined && init !== null && !isObject(init)) throw new TypeError('Response: init must be an object');
    const o = init ?? {};
    const status = o.status === undefined ? 200 : unsignedShort(o.status);
    // Workers: a WebSocket upgrade is answered 101 with the client end of a WebSocketPair.
    const webSocket = o.webSocket ?? null;
    if (webSocket !== null) {
      checkResponseSocket(webSocket);
      if (status !== 101) throw new RangeError(`Response: a Response with a webSocket must have status 101, not ${String(o.status ?? 200)}`);
    } else if (status === 101) {
      throw new RangeError('Response: status 101 needs a webSocket (the client end of a WebSocketPair)');
    }
    if (status !== 101 && (status < 200 || status > 599)) throw new RangeError(`Response: status must be in the range 200 to 599, not ${String(o.status)}`);
    const statusText = o.statusText === undefined ? '' : String(o.statusText);
    if (!REASON_PHRASE.test(statusText)) throw new TypeError('Response: statusText has characters not allowed in a reason phrase');
    const headers = new Headers(o.headers);
    let source = null;
    if (body !== null && body !== undefined) {
      if (ArrayIncludes(NULL_BODY_STATUSES, status)) throw new TypeError(`Response with null body status ${status} cannot have a body`);
      const extracted = extractBody(body, 'Response');
      source = extracted.source;
      if (extracted.type !== null && !hasHeader(headers, 'content-type')) appendHeader(headers, 'content-type', extracted.type);
    }
    this.#status = status;
    this.#statusText = statusText;
    this.#headers = headers;
    this.#type = 'default';
    this.#url = '';
    this.#redirected = false;
    this.#body = newBody(source, headers);
    this.#webSocket = webSocket;
  }

  get type() { return this.#type; }
  get url() { return this.#url; }
  get redirected() { return this.#redirected; }
  get status() { return this.#status; }
  get ok() { return this.#status >= 200 && this.#status <= 299; }
  get statusText() { return this.#statusText; }
  get headers() { return this.#headers; }
  /** The client end of a WebSocketPair this 101 response hands to the client, or null. */
  get webSocket() { return this.#webSocket; }

  clone() {
    const headers = copyHeaders(this.#headers);
    return new Response(INTERNAL, {
      status: this.#status, statusText: this.#statusText, headers, type: this.#type, url: this.#url, redirected: this.#redirected,
      body: cloneBody(this.#body, headers, 'Response.clone'), webSocket: this.#webSocket,
    });
  }

  static error() {
    const headers = trustedHeaders([], 'immutable');
    return new Response(INTERNAL, {
      status: 0, statusText: '', headers, type: 'error', url: '', redirected: false, body: newBody(null, headers),
    });
  }

  static redirect(url, status = 302) {
    const parsed = parseURL(String(url).toWellFormed());
    if (parsed === null) throw new TypeError(`Response.redirect: invalid URL ${String(url)} (it must be absolute)`);
    const code = unsignedShort(status);
    if (!ArrayIncludes(REDIRECT_STATUSES, code)) throw new RangeError(`Response.redirect: ${String(status)} is not a redirect status (301, 302, 303, 307 or 308)`);
    const headers = trustedHeaders([['location', parsed.href]], 'immutable');
    return new Response(INTERNAL, {
      status: code, statusText: '', headers, type: 'default', url: '', redirected: false, body: newBody(null, headers),
    });
  }

  static json(data = undefined, init = undefined) {
    const text = JSON.stringify(data);
    if (text === undefined) throw new TypeError('Response.json: the data cannot be serialized as JSON');
    const r = new Response(null, init);
    if (ArrayIncludes(NULL_BODY_STATUSES, r.#status)) throw new TypeError(`Response with null body status ${r.#status} cannot have a body`);
    r.#body = newBody(textSource(text), r.#headers);
    if (!hasHeader(r.#headers, 'content-type')) appendHeader(r.#headers, 'content-type', 'application/json');
    return r;
  }

  static {
    partsOf = (r) => ({ status: r.#status, statusText: r.#statusText, headers: sortAndCombine(headerList(r.#headers)) });
    bodyOfResponse = (r) => r.#body;
    socketOf = (r) => r.#webSocket;
  }
}

mixinBody(Response, (r) => bodyOfResponse(r));

/**
 * A subrequest's response from the host's result: immutable headers, as in Workers, and
 * no body for a null-body status or a HEAD request. body is an ArrayBuffer (a small body
 * the host passed whole), a ReadableStream (one it streams) or null.
 */
export function fetchedResponse({ status, statusText, headers, url, redirected, body }, method) {
  const h = trustedHeaders(headers, 'immutable');
  const noBody = body === null || ArrayIncludes(NULL_BODY_STATUSES, status) || method === 'HEAD';
  const source = noBody ? null : body instanceof ArrayBuffer ? new Uint8Array(body) : body;
  return new Response(INTERNAL, { status, statusText, headers: h, type: 'default', url, redirected, body: newBody(source, h) });
}

/** For the runtime: status line and headers, sorted and combined (set-cookie kept apart). */
export const responseParts = (r) => partsOf(r);

/**
 * For the runtime: hands the response's WebSocket (the client end) to the host and
 * returns the host's number for the server end, or null when the response has none.
 */
export function takeResponseSocket(r) {
  const ws = socketOf(r);
  return ws === null ? null : transferToHost(ws);
}

/** For the runtime: null | Uint8Array | ReadableStream; marks the body used. */
export const bodyOf = (r) => takeBody(bodyOfResponse(r), 'the worker returned a Response whose body');
