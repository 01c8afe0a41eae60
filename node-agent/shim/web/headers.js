// Headers: a header list with the Fetch standard's validation, guards and
// "sort and combine" view (set-cookie kept one entry per cookie).
import { INTERNAL, isObject, requireArgs } from './util.js';
import { ArrayFilter, ArrayJoin, ArrayPush, ArraySort, MapGet, MapSet } from './primordials.js';

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const EDGE_WHITESPACE = /^[\t\n\r ]+|[\t\n\r ]+$/g;
const BAD_VALUE = /[\0\r\n]|[^\0-\xff]/;

export function headerName(name) {
  const n = String(name);
  if (!TOKEN.test(n)) throw new TypeError(`Invalid header name: "${n}"`);
  return n.toLowerCase();
}

function headerValue(value, name) {
  const v = String(value).replace(EDGE_WHITESPACE, '');
  if (BAD_VALUE.test(v)) throw new TypeError(`Invalid value for header "${name}": "${v}"`);
  return v;
}

const byName = (a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

/**
 * Fetch's "sort and combine": lower-case names in order, values joined with ", ". The
 * result may be the list itself: callers must not modify it.
 */
export function sortAndCombine(list) {
  // The usual list is already sorted without repeats: it is its own answer.
  let i = 1;
  while (i < list.length && list[i - 1][0] < list[i][0]) i++;
  if (i >= list.length) return list;
  const groups = new Map();
  const names = [];
  for (let j = 0; j < list.length; j++) {
    const k = list[j][0];
    const v = list[j][1];
    const values = MapGet(groups, k);
    if (values) ArrayPush(values, v);
    else {
      MapSet(groups, k, [v]);
      ArrayPush(names, [k]);
    }
  }
  ArraySort(names, byName);
  const out = [];
  for (let j = 0; j < names.length; j++) {
    const k = names[j][0];
    const values = MapGet(groups, k);
    if (k === 'set-cookie') for (let n = 0; n < values.length; n++) ArrayPush(out, [k, values[n]]);
    else ArrayPush(out, [k, ArrayJoin(values, ', ')]);
  }
  return out;
}

let listOf;
let setList;
let guardOf;
let setGuard;

export class Headers {
  /** [lower-case name, value][] in insertion order; duplicates kept. */
  #list = [];
  /** "none" | "immutable" (a fetched response's, an incoming request's, a redirect's). */
  #guard = 'none';

  constructor(init = undefined) {
    if (init === INTERNAL) return;
    if (init === undefined || init === null) return;
    if (init instanceof Headers) {
      const from = init.#list;
      for (let i = 0; i < from.length; i++) ArrayPush(this.#list, [from[i][0], from[i][1]]);
      return;
    }
    if (!isObject(init)) throw new TypeError('Headers: init must be a Headers, an array of [name, value] pairs or an object');
    const iterator = init[Symbol.iterator];
    if (iterator !== undefined) {
      if (typeof iterator !== 'function') throw new TypeError('Headers: init is not iterable');
      for (const pair of init) {
        const p = isObject(pair) ? [...pair] : [];
        if (p.length !== 2) throw new TypeError('Headers: each item of the init sequence must be a [name, value] pair');
        this.append(p[0], p[1]);
      }
      return;
    }
    const keys = Reflect.ownKeys(init);
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i];
      if (typeof k === 'symbol' || !Object.getOwnPropertyDescriptor(init, k)?.enumerable) continue;
      this.append(k, init[k]);
    }
  }

  #mutable() {
    if (this.#guard === 'immutable') throw new TypeError("Can't modify immutable headers.");
  }

  append(name, value) {
    requireArgs(arguments.length, 2, 'Headers.append');
    const n = headerName(name);
    const v = headerValue(value, n);
    this.#mutable();
    ArrayPush(this.#list, [n, v]);
  }

  delete(name) {
    requireArgs(arguments.length, 1, 'Headers.delete');
    const n = headerName(name);
    this.#mutable();
    this.#list = ArrayFilter(this.#list, (e) => e[0] !== n);
  }

  get(name) {
    requireArgs(arguments.length, 1, 'Headers.get');
    const n = headerName(name);
    const list = this.#list;
    let out = null;
    for (let i = 0; i < list.length; i++) if (list[i][0] === n) out = out === null ? list[i][1] : `${out}, ${list[i][1]}`;
    return out;
  }

  getSetCookie() {
    const list = this.#list;
    const out = [];
    for (let i = 0; i < list.length; i++) if (list[i][0] === 'set-cookie') ArrayPush(out, list[i][1]);
    return out;
  }

  /** Workers' non-standard getAll, which only works for Set-Cookie. */
  getAll(name) {
    requireArgs(arguments.length, 1, 'Headers.getAll');
    if (headerName(name) !== 'set-cookie') throw new TypeError('getAll() can only be used with the header name "Set-Cookie".');
    return this.getSetCookie();
  }

  has(name) {
    requireArgs(arguments.length, 1, 'Headers.has');
    return hasHeader(this, headerName(name));
  }

  set(name, value) {
    requireArgs(arguments.length, 2, 'Headers.set');
    const n = headerName(name);
    const v = headerValue(value, n);
    this.#mutable();
    const list = this.#list;
    let at = -1;
    for (let i = 0; i < list.length && at < 0; i++) if (list[i][0] === n) at = i;
    if (at < 0) ArrayPush(list, [n, v]);
    else {
      list[at] = [n, v];
      this.#list = ArrayFilter(list, (e, j) => e[0] !== n || j === at);
    }
  }

  forEach(callback, thisArg = undefined) {
    if (typeof callback !== 'function') throw new TypeError('Headers.forEach: the callback must be a function');
    const pairs = sortAndCombine(this.#list);
    for (let i = 0; i < pairs.length; i++) callback.call(thisArg, pairs[i][1], pairs[i][0], this);
  }

  *keys() {
    const pairs = sortAndCombine(this.#list);
    for (let i = 0; i < pairs.length; i++) yield pairs[i][0];
  }

  *values() {
    const pairs = sortAndCombine(this.#list);
    for (let i = 0; i < pairs.length; i++) yield pairs[i][1];
  }

  *entries() {
    const pairs = sortAndCombine(this.#list);
    for (let i = 0; i < pairs.length; i++) yield [pairs[i][0], pairs[i][1]];
  }

  [Symbol.iterator]() { return this.entries(); }

  static {
    listOf = (h) => h.#list;
    setList = (h, list) => {
      h.#list = list;
    };
    guardOf = (h) => h.#guard;
    setGuard = (h, guard) => {
      h.#guard = guard;
    };
  }
}

/** The header list itself (not a copy): for sending and for responseParts. */
export const headerList = (h) => listOf(h);

/**
 * Headers over an already-valid list of [name, value] pairs (from the host or the
 * runtime), which it takes over without copying; names are lower-cased in place.
 */
export function trustedHeaders(list, guard) {
  const h = new Headers(INTERNAL);
  for (let i = 0; i < list.length; i++) {
    const e = list[i];
    const lower = e[0].toLowerCase();
    if (lower !== e[0]) e[0] = lower;
  }
  setList(h, list);
  setGuard(h, guard);
  return h;
}

export function copyHeaders(h) {
  const from = listOf(h);
  const list = [];
  for (let i = 0; i < from.length; i++) ArrayPush(list, [from[i][0], from[i][1]]);
  return trustedHeaders(list, guardOf(h));
}

/** has() for a name known to be valid and lower-case: no validation on the hot path. */
export function hasHeader(h, lowerName) {
  const list = listOf(h);
  for (let i = 0; i < list.length; i++) if (list[i][0] === lowerName) return true;
  return false;
}

/** append() of a header the platform itself adds (a default Content-Type). */
export function appendHeader(h, lowerName, value) {
  ArrayPush(listOf(h), [lowerName, value]);
}
