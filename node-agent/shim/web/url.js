// URL and URLSearchParams. Parsing and setters go to the host's WHATWG URL parser so
// every edge case (IDNA, IPv6, special schemes, percent-encoding) is the standard's,
// except the plain http(s) URLs ./url-fast.js parses in the isolate to the same record;
// URLSearchParams is the application/x-www-form-urlencoded algorithms, live-linked to
// its URL's query.
import { host } from '../host.js';
import { fastParseURL } from './url-fast.js';
import { utf8Decode, utf8Encode } from './encoding.js';
import { INTERNAL, isObject, mixinPairIteration, requireArgs } from './util.js';
import { ArrayFilter, ArrayFind, ArrayFindIndex, ArrayJoin, ArrayMap, ArrayPush, ArraySome, ArraySort, MapGet, MapSet } from './primordials.js';

const usv = (v) => String(v).toWellFormed();
const MapCtor = Map;

// A parse is a synchronous round trip to the host's thread, which may be busy (a Worker
// Loader's load compiling there held a caller's `new Request(url)` ~0.5 ms), and the host's
// answer is a pure function of the strings. A worker parses the same few URLs again and
// again (the origins it fetches, its routes), so each isolate keeps its last few parses.
// A record is never changed in place (setters replace it), so one may be shared.
const PARSED_MAX = 32;
const PARSED_KEY_CHARS = 512;
let parsed = new MapCtor();
let parsedCount = 0;

/** The host's WHATWG parse of well-formed strings: its record, or null when invalid. */
export function parseURL(url, base = undefined) {
  if (base === undefined) {
    const fast = fastParseURL(url);
    if (fast !== undefined) return fast;
  }
  const key = base === undefined ? `0${url}` : `1${base.length}:${base}${url}`;
  if (key.length > PARSED_KEY_CHARS) return base === undefined ? host.parseURL(url) : host.parseURL(url, base);
  const hit = MapGet(parsed, key);
  if (hit !== undefined) return hit;
  const r = base === undefined ? host.parseURL(url) : host.parseURL(url, base);
  if (parsedCount >= PARSED_MAX) {
    parsed = new MapCtor();
    parsedCount = 0;
  }
  MapSet(parsed, key, r);
  parsedCount += 1;
  return r;
}

function parse(url, base) {
  return base === undefined ? parseURL(usv(url)) : parseURL(usv(url), usv(base));
}

let setQueryOf;
let paramsFor;
let reparseParams;

export class URL {
  #r;
  #params = null;

  constructor(url, base = undefined) {
    if (url === INTERNAL) {
      this.#r = base;
      return;
    }
    requireArgs(arguments.length, 1, 'URL');
    const r = parse(url, base);
    if (r === null) throw new TypeError(`Invalid URL: ${String(url)}${base === undefined ? '' : ` (against base ${String(base)})`}`);
    this.#r = r;
  }

  static canParse(url, base = undefined) {
    requireArgs(arguments.length, 1, 'URL.canParse');
    return parse(url, base) !== null;
  }

  static parse(url, base = undefined) {
    requireArgs(arguments.length, 1, 'URL.parse');
    const r = parse(url, base);
    return r === null ? null : new URL(INTERNAL, r);
  }

  #set(property, value) {
    const before = this.#r.search;
    let r;
    try {
      r = host.setURL(this.#r.href, property, usv(value));
    } catch {
      throw new TypeError(`Invalid URL: ${String(value)}`);
    }
    this.#r = r;
    if (this.#params !== null && r.search !== before) reparseParams(this.#params, r.search);
  }

  get href() { return this.#r.href; }
  set href(v) { this.#set('href', v); }
  get origin() { return this.#r.origin; }
  get protocol() { return this.#r.protocol; }
  set protocol(v) { this.#set('protocol', v); }
  get username() { return this.#r.username; }
  set username(v) { this.#set('username', v); }
  get password() { return this.#r.password; }
  set password(v) { this.#set('password', v); }
  get host() { return this.#r.host; }
  set host(v) { this.#set('host', v); }
  get hostname() { return this.#r.hostname; }
  set hostname(v) { this.#set('hostname', v); }
  get port() { return this.#r.port; }
  set port(v) { this.#set('port', v); }
  get pathname() { return this.#r.pathname; }
  set pathname(v) { this.#set('pathname', v); }
  get search() { return this.#r.search; }
  set search(v) { this.#set('search', v); }
  get hash() { return this.#r.hash; }
  set hash(v) { this.#set('hash', v); }

  get searchParams() {
    if (this.#params === null) this.#params = paramsFor(this, this.#r.search);
    return this.#params;
  }

  toString() { return this.#r.href; }
  toJSON() { return this.#r.href; }

  static {
    setQueryOf = (url, query) => {
      url.#r = host.setURL(url.#r.href, 'search', query);
    };
  }
}

const SAFE = /^[A-Za-z0-9*\-._]*$/;
const HEX = '0123456789ABCDEF';

function encodeComponent(s) {
  if (SAFE.test(s)) return s;
  let out = '';
  for (const b of utf8Encode(s)) {
    if (b === 0x20) out += '+';
    else if ((b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x2a || b === 0x2d || b === 0x2e || b === 0x5f) out += String.fromCharCode(b);
    else out += `%${HEX[b >> 4]}${HEX[b & 15]}`;
  }
  return out;
}

const hexValue = (c) => (c >= 0x30 && c <= 0x39 ? c - 0x30 : (c |= 0x20) >= 0x61 && c <= 0x66 ? c - 0x57 : -1);

function decodeComponent(s) {
  s = s.replace(/\+/g, ' ');
  if (!s.includes('%')) return s;
  const bytes = utf8Encode(s);
  const out = new Uint8Array(bytes.length);
  let j = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === 0x25 && i + 2 < bytes.length) {
      const hi = hexValue(bytes[i + 1]);
      const lo = hexValue(bytes[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out[j++] = (hi << 4) | lo;
        i += 2;
        continue;
      }
    }
    out[j++] = b;
  }
  return utf8Decode(out.subarray(0, j), false);
}

export function parseUrlencoded(s) {
  const list = [];
  for (const part of s.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    ArrayPush(list, eq < 0 ? [decodeComponent(part), ''] : [decodeComponent(part.slice(0, eq)), decodeComponent(part.slice(eq + 1))]);
  }
  return list;
}

export class URLSearchParams {
  #list = [];
  #url = null;

  constructor(init = '') {
    if (init === INTERNAL) return;
    if (isObject(init)) {
      const iterator = init[Symbol.iterator];
      if (iterator !== undefined) {
        if (typeof iterator !== 'function') throw new TypeError('URLSearchParams: the init object is not iterable');
        for (const pair of init) {
          const p = isObject(pair) ? [...pair] : [];
          if (p.length !== 2) throw new TypeError('URLSearchParams: each item of the init sequence must be a [name, value] pair');
          ArrayPush(this.#list, [usv(p[0]), usv(p[1])]);
        }
      } else {
        for (const k of Reflect.ownKeys(init)) {
          if (typeof k === 'symbol' || !Object.getOwnPropertyDescriptor(init, k)?.enumerable) continue;
          ArrayPush(this.#list, [usv(k), usv(init[k])]);
        }
      }
    } else {
      let s = usv(init);
      if (s.startsWith('?')) s = s.slice(1);
      this.#list = parseUrlencoded(s);
    }
  }

  #update() {
    if (this.#url !== null) setQueryOf(this.#url, this.toString());
  }

  get size() { return this.#list.length; }

  append(name, value) {
    requireArgs(arguments.length, 2, 'URLSearchParams.append');
    ArrayPush(this.#list, [usv(name), usv(value)]);
    this.#update();
  }

  delete(name, value = undefined) {
    requireArgs(arguments.length, 1, 'URLSearchParams.delete');
    const n = usv(name);
    const v = value === undefined ? undefined : usv(value);
    this.#list = ArrayFilter(this.#list, (e) => e[0] !== n || (v !== undefined && e[1] !== v));
    this.#update();
  }

  get(name) {
    requireArgs(arguments.length, 1, 'URLSearchParams.get');
    const n = usv(name);
    const e = ArrayFind(this.#list, (x) => x[0] === n);
    return e === undefined ? null : e[1];
  }

  getAll(name) {
    requireArgs(arguments.length, 1, 'URLSearchParams.getAll');
    const n = usv(name);
    return ArrayMap(ArrayFilter(this.#list, (e) => e[0] === n), (e) => e[1]);
  }

  has(name, value = undefined) {
    requireArgs(arguments.length, 1, 'URLSearchParams.has');
    const n = usv(name);
    const v = value === undefined ? undefined : usv(value);
    return ArraySome(this.#list, (e) => e[0] === n && (v === undefined || e[1] === v));
  }

  set(name, value) {
    requireArgs(arguments.length, 2, 'URLSearchParams.set');
    const n = usv(name);
    const v = usv(value);
    const i = ArrayFindIndex(this.#list, (e) => e[0] === n);
    if (i < 0) ArrayPush(this.#list, [n, v]);
    else {
      this.#list[i] = [n, v];
      this.#list = ArrayFilter(this.#list, (e, j) => e[0] !== n || j === i);
    }
    this.#update();
  }

  sort() {
    // Array.prototype.sort is stable and compares strings by UTF-16 code units, as required.
    ArraySort(this.#list, (a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    this.#update();
  }

  static {
    mixinPairIteration(this, (o) => o.#list, 'URLSearchParams');
  }

  toString() {
    return ArrayJoin(ArrayMap(this.#list, (e) => `${encodeComponent(e[0])}=${encodeComponent(e[1])}`), '&');
  }

  static {
    paramsFor = (url, search) => {
      const p = new URLSearchParams(INTERNAL);
      p.#url = url;
      p.#list = parseUrlencoded(search.slice(1));
      return p;
    };
    reparseParams = (p, search) => {
      p.#list = parseUrlencoded(search.slice(1));
    };
  }
}
