// structuredClone: the HTML structured serialize/deserialize pair, done as one deep copy
// since both ends are in this isolate. Blob bytes are immutable, so a clone shares them.
import { DOMException, platformClassOf, requireArgs } from './util.js';
import { Blob, File } from './blob.js';
import { MapGet, MapSet, SetAdd } from './primordials.js';

const ERROR_TYPES = { Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError };
const TypedArray = Object.getPrototypeOf(Uint8Array);
const typedArrayName = Object.getOwnPropertyDescriptor(TypedArray.prototype, Symbol.toStringTag).get;
const TYPED_ARRAYS = {
  Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array,
  Float32Array, Float64Array, BigInt64Array, BigUint64Array,
};

const uncloneable = (what) => new DOMException(`${what} could not be cloned.`, 'DataCloneError');

function cloneObject(v, memory) {
  if (Array.isArray(v)) {
    const out = new Array(v.length);
    MapSet(memory, v, out);
    const keys = Object.keys(v);
    for (let i = 0; i < keys.length; i++) out[keys[i]] = clone(v[keys[i]], memory);
    return out;
  }
  let out;
  if (v instanceof Date) out = new Date(v.getTime());
  else if (v instanceof RegExp) out = new RegExp(v.source, v.flags);
  else if (v instanceof ArrayBuffer) out = v.slice(0);
  else if (ArrayBuffer.isView(v)) {
    const buffer = clone(v.buffer, memory);
    if (v instanceof DataView) out = new DataView(buffer, v.byteOffset, v.byteLength);
    else out = new TYPED_ARRAYS[typedArrayName.call(v)](buffer, v.byteOffset, v.length);
  } else if (v instanceof Map) {
    out = new Map();
    MapSet(memory, v, out);
    for (const [k, x] of v) MapSet(out, clone(k, memory), clone(x, memory));
    return out;
  } else if (v instanceof Set) {
    out = new Set();
    MapSet(memory, v, out);
    for (const x of v) SetAdd(out, clone(x, memory));
    return out;
  } else if (v instanceof File) {
    out = new File([v], v.name, { type: v.type, lastModified: v.lastModified });
  } else if (v instanceof Blob) {
    out = v.slice(0, v.size, v.type);
  } else if (v instanceof DOMException) {
    out = new DOMException(v.message, v.name);
    if (typeof v.stack === 'string') Object.defineProperty(out, 'stack', { value: v.stack, writable: true, configurable: true });
  } else if (v instanceof Error) {
    const name = Object.hasOwn(ERROR_TYPES, v.name) ? v.name : 'Error';
    const message = Object.getOwnPropertyDescriptor(v, 'message');
    out = new ERROR_TYPES[name](message && 'value' in message ? String(message.value) : undefined);
    if (typeof v.stack === 'string') Object.defineProperty(out, 'stack', { value: v.stack, writable: true, configurable: true });
    if (Object.hasOwn(v, 'cause')) {
      MapSet(memory, v, out);
      Object.defineProperty(out, 'cause', { value: clone(v.cause, memory), writable: true, configurable: true });
    }
  } else if (v instanceof Boolean || v instanceof Number || v instanceof String || v instanceof BigInt) {
    out = Object(v.valueOf());
  } else if (v instanceof Promise || v instanceof WeakMap || v instanceof WeakSet || (typeof WeakRef === 'function' && v instanceof WeakRef)) {
    throw uncloneable(`#<${v.constructor.name}>`);
  } else {
    const platform = platformClassOf(v);
    if (platform) throw uncloneable(`#<${platform.name}>`);
    out = {};
    MapSet(memory, v, out);
    const keys = Object.keys(v);
    for (let i = 0; i < keys.length; i++) out[keys[i]] = clone(v[keys[i]], memory);
    return out;
  }
  MapSet(memory, v, out);
  return out;
}

function clone(v, memory) {
  if (typeof v === 'symbol') throw uncloneable(v.toString());
  if (typeof v === 'function') throw uncloneable(`${v.name ? `function ${v.name}` : 'An anonymous function'}`);
  if (v === null || typeof v !== 'object') return v;
  const seen = MapGet(memory, v);
  if (seen !== undefined) return seen;
  return cloneObject(v, memory);
}

export function structuredClone(value, options = undefined) {
  requireArgs(arguments.length, 1, 'structuredClone');
  const transfer = options?.transfer;
  if (transfer !== undefined && [...transfer].length > 0) {
    throw new DOMException('structuredClone: the transfer option is not supported', 'DataCloneError');
  }
  return clone(value, new Map());
}
