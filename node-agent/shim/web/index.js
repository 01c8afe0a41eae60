// BOOTSTRAP VERSION: a minimal stand-in for the Web APIs so the host can be built and
// tested; it is being replaced by the full implementation (see the contract below).
//
// Contract with ../index.js:
//   installWebApis(g)      defines the Web API globals on g
//   PLATFORM_GLOBALS       names of the globals installWebApis defines (frozen at init)
//   makeRequest({url, method, headers, body})  body: null | Uint8Array | ReadableStream
//   bodyOf(response)       null | Uint8Array | ReadableStream (marks the body used)
//   responseParts(response) {status, statusText, headers: [name, value][]}
import { host } from '../host.js';

const enc = (s) => {
  const out = [];
  for (const ch of String(s)) {
    let c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
};
const dec = (u8) => {
  let s = '';
  for (let i = 0; i < u8.length;) {
    const b = u8[i++];
    if (b < 0x80) s += String.fromCharCode(b);
    else if (b < 0xe0) s += String.fromCharCode(((b & 31) << 6) | (u8[i++] & 63));
    else if (b < 0xf0) s += String.fromCharCode(((b & 15) << 12) | ((u8[i++] & 63) << 6) | (u8[i++] & 63));
    else s += String.fromCodePoint(((b & 7) << 18) | ((u8[i++] & 63) << 12) | ((u8[i++] & 63) << 6) | (u8[i++] & 63));
  }
  return s;
};

class Headers {
  #list = new Map();
  constructor(init) {
    if (init instanceof Headers) init = [...init];
    else if (init && !Array.isArray(init)) init = Object.entries(init);
    for (const [k, v] of init ?? []) this.append(k, v);
  }
  append(k, v) { k = String(k).toLowerCase(); const p = this.#list.get(k); this.#list.set(k, p === undefined ? String(v) : `${p}, ${v}`); }
  set(k, v) { this.#list.set(String(k).toLowerCase(), String(v)); }
  get(k) { return this.#list.get(String(k).toLowerCase()) ?? null; }
  has(k) { return this.#list.has(String(k).toLowerCase()); }
  delete(k) { this.#list.delete(String(k).toLowerCase()); }
  *[Symbol.iterator]() { yield* [...this.#list].sort((a, b) => (a[0] < b[0] ? -1 : 1)); }
  entries() { return this[Symbol.iterator](); }
}

const BODY = Symbol('body');
const toBytes = (b) => {
  if (b === null || b === undefined) return null;
  if (typeof b === 'string') return enc(b);
  if (b instanceof Uint8Array) return b;
  if (b instanceof ArrayBuffer) return new Uint8Array(b);
  return b; // a stream
};

class Body {
  async arrayBuffer() { const b = this[BODY]; this[BODY] = null; return b ? b.slice().buffer : new ArrayBuffer(0); }
  async text() { return dec(new Uint8Array(await this.arrayBuffer())); }
  async json() { return JSON.parse(await this.text()); }
}

class Request extends Body {
  constructor(input, init = {}) {
    super();
    this.url = String(input);
    this.method = (init.method ?? 'GET').toUpperCase();
    this.headers = new Headers(init.headers);
    this[BODY] = toBytes(init.body);
  }
}

class Response extends Body {
  constructor(body = null, init = {}) {
    super();
    this.status = init.status ?? 200;
    this.statusText = init.statusText ?? '';
    this.headers = new Headers(init.headers);
    this[BODY] = toBytes(body);
    if (typeof body === 'string' && !this.headers.has('content-type')) this.headers.set('content-type', 'text/plain;charset=UTF-8');
  }
  static json(data, init = {}) {
    const r = new Response(JSON.stringify(data), init);
    r.headers.set('content-type', 'application/json');
    return r;
  }
}

class ReadableStream {
  constructor() { throw new Error('ReadableStream is not in the bootstrap shim'); }
}

const fmt = (args) => args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ');
const console = {};
for (const level of ['log', 'info', 'warn', 'error', 'debug']) console[level] = (...args) => host.log(level, fmt(args));

export const PLATFORM_GLOBALS = ['Headers', 'Request', 'Response', 'ReadableStream', 'console', 'TextEncoder', 'TextDecoder'];

export function installWebApis(g) {
  Object.assign(g, {
    Headers, Request, Response, ReadableStream, console,
    TextEncoder: class { encode(s) { return enc(s); } },
    TextDecoder: class { decode(u) { return dec(u); } },
  });
}

export const makeRequest = ({ url, method, headers, body }) => new Request(url, { method, headers, body });
export const bodyOf = (r) => { const b = r[BODY]; r[BODY] = null; return b; };
export const responseParts = (r) => ({ status: r.status, statusText: r.statusText, headers: [...r.headers] });
