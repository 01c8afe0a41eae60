// Request.
import { parseURL } from './url.js';
import { Headers, appendHeader, copyHeaders, hasHeader, trustedHeaders } from './headers.js';
import { AbortController, AbortSignal, abortSignal } from './abort.js';
import { cloneBody, extractBody, mixinBody, newBody, transferBody } from './body.js';
import { INTERNAL, isObject, requireArgs } from './util.js';
import { ArrayIncludes } from './primordials.js';

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const NORMALIZED_METHODS = ['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT'];
const FORBIDDEN_METHODS = ['CONNECT', 'TRACE', 'TRACK'];
const REDIRECT_MODES = ['follow', 'error', 'manual'];

function normalizeMethod(m) {
  const s = String(m);
  if (!TOKEN.test(s)) throw new TypeError(`Invalid HTTP method: "${s}"`);
  const upper = s.toUpperCase();
  if (ArrayIncludes(FORBIDDEN_METHODS, upper)) throw new TypeError(`The HTTP method ${upper} is not allowed`);
  return ArrayIncludes(NORMALIZED_METHODS, upper) ? upper : s;
}

function requestURL(input) {
  const r = parseURL(String(input).toWellFormed());
  if (r === null) throw new TypeError(`Invalid URL: ${String(input)} (a Request needs an absolute URL)`);
  if (r.username !== '' || r.password !== '') throw new TypeError('A Request URL must not include credentials');
  return r.href;
}

let signalOf;
let abortOf;
let bodyOfRequest;

export class Request {
  #method;
  #url;
  #headers;
  #redirect;
  /** null until someone asks: most requests never need a signal object. */
  #signal;
  #cf;
  #body;

  constructor(input, init = undefined) {
    if (input === INTERNAL) {
      this.#method = init.method;
      this.#url = init.url;
      this.#headers = init.headers;
      this.#redirect = init.redirect;
      this.#signal = init.signal;
      this.#cf = init.cf;
      this.#body = init.body;
      return;
    }
    requireArgs(arguments.length, 1, 'Request');
    if (init !== undefined && init !== null && !isObject(init)) throw new TypeError('Request: init must be an object');
    const o = init ?? {};
    const from = input instanceof Request ? input : null;
    let method = 'GET';
    let redirect = 'follow';
    let signal = null;
    let cf;
    let url;
    if (from !== null) {
      url = from.#url;
      method = from.#method;
      redirect = from.#redirect;
      // Through the getter: a copy of the incoming request must see it abort too.
      signal = from.signal;
      cf = from.#cf;
    } else {
      url = requestURL(input);
    }
    if (o.method !== undefined) method = normalizeMethod(o.method);
    if (o.redirect !== undefined) {
      redirect = String(o.redirect);
      if (!ArrayIncludes(REDIRECT_MODES, redirect)) throw new TypeError(`Request: redirect must be follow, error or manual, not "${redirect}"`);
    }
    if (o.signal !== undefined) {
      if (o.signal !== null && !(o.signal instanceof AbortSignal)) throw new TypeError('Request: signal must be an AbortSignal');
      signal = o.signal;
    }
    if (o.cf !== undefined) cf = o.cf;
    const headers = new Headers(o.headers !== undefined ? o.headers : from !== null ? from.#headers : undefined);
    const initBodyGiven = o.body !== undefined && o.body !== null;
    if ((initBodyGiven || (from !== null && from.#body.source !== null)) && (method === 'GET' || method === 'HEAD')) {
      throw new TypeError('Request with a GET or HEAD method cannot have a body.');
    }
    this.#method = method;
    this.#url = url;
    this.#headers = headers;
    this.#redirect = redirect;
    this.#signal = signal;
    this.#cf = cf;
    if (initBodyGiven) {
      const { source, type } = extractBody(o.body, 'Request');
      if (type !== null && !hasHeader(headers, 'content-type')) appendHeader(headers, 'content-type', type);
      this.#body = newBody(source, headers);
    } else if (from !== null) {
      this.#body = transferBody(from.#body, headers);
    } else {
      this.#body = newBody(null, headers);
    }
  }

  get method() { return this.#method; }
  get url() { return this.#url; }
  get headers() { return this.#headers; }
  get redirect() { return this.#redirect; }
  get cf() { return this.#cf; }
  get keepalive() { return false; }
  get integrity() { return ''; }

  get signal() {
    if (this.#signal === null) this.#signal = new AbortController().signal;
    return this.#signal;
  }

  clone() {
    const headers = copyHeaders(this.#headers);
    return new Request(INTERNAL, {
      method: this.#method, url: this.#url, headers, redirect: this.#redirect, signal: this.#signal, cf: this.#cf,
      body: cloneBody(this.#body, headers, 'Request.clone'),
    });
  }

  static {
    abortOf = (r, reason) => {
      // No one has asked for the signal yet: it is born aborted when they do.
      if (r.#signal === null) r.#signal = new AbortController().signal;
      abortSignal(r.#signal, reason);
    };
    signalOf = (r) => r.#signal;
    bodyOfRequest = (r) => r.#body;
  }
}

mixinBody(Request, (r) => bodyOfRequest(r));

/** The request's signal if it has one (without creating one). */
export const requestSignal = (r) => signalOf(r);

/** Aborts an incoming request's signal (the client went away). */
export const abortRequest = (r, reason) => abortOf(r, reason);

/** The request's body state (see ./body.js). */
export const requestBody = (r) => bodyOfRequest(r);

/**
 * An incoming request from the host: trusted data (the front already serialized the URL
 * with the WHATWG parser), immutable headers, as Workers does.
 */
export function makeRequest({ url, method, headers, body, cf = undefined }) {
  const h = trustedHeaders(headers, 'immutable');
  return new Request(INTERNAL, {
    method: String(method), url: String(url), headers: h,
    redirect: 'manual', signal: null, cf, body: newBody(body ?? null, h),
  });
}
