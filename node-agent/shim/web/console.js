// console, formatting values readably (close to Node's util.inspect, much smaller) and
// handing each line to the host's log with its level.
import { host } from '../host.js';
import { platformClassOf } from './util.js';
import { ArrayIncludes, ArrayJoin, ArrayMap, ArrayPop, ArrayPush, ArrayUnshift, MapDelete, MapGet, MapSet } from './primordials.js';

const MAX_ITEMS = 100;
const LINE = 72;
const IDENT = /^[A-Za-z_$][\w$]*$/;

const quote = (s) => `'${s.replace(/[\\']/g, '\\$&').replace(/\n/g, '\\n')}'`;
const keyText = (k) => (typeof k === 'symbol' ? `[${k.toString()}]` : IDENT.test(k) ? k : quote(k));

function functionText(fn) {
  const src = Function.prototype.toString.call(fn);
  if (src.startsWith('class')) return `[class ${fn.name || '(anonymous)'}]`;
  return fn.name ? `[Function: ${fn.name}]` : '[Function (anonymous)]';
}

function wrap(prefix, items, open, close) {
  if (items.length === 0) return `${prefix}${open}${close}`;
  const oneLine = `${prefix}${open} ${ArrayJoin(items, ', ')} ${close}`;
  if (oneLine.length <= LINE && !oneLine.includes('\n')) return oneLine;
  return `${prefix}${open}\n  ${ArrayJoin(ArrayMap(items, (s) => s.replace(/\n/g, '\n  ')), ',\n  ')}\n${close}`;
}

function ctorName(v) {
  const proto = Object.getPrototypeOf(v);
  if (proto === null) return '[Object: null prototype]';
  const ctor = proto.constructor;
  return typeof ctor === 'function' && ctor.name ? ctor.name : 'Object';
}

function ownEntries(v, depth, seen) {
  const out = [];
  for (const k of Reflect.ownKeys(v)) {
    const d = Object.getOwnPropertyDescriptor(v, k);
    if (!d || !d.enumerable) continue;
    ArrayPush(out, `${keyText(k)}: ${'value' in d ? inspect(d.value, depth, seen) : d.set ? '[Getter/Setter]' : '[Getter]'}`);
  }
  return out;
}

function listItems(list, depth, seen, fmt) {
  const items = [];
  let i = 0;
  for (const x of list) {
    if (i++ === MAX_ITEMS) {
      ArrayPush(items, `... ${list.length === undefined ? 'more items' : `${list.length - MAX_ITEMS} more items`}`);
      break;
    }
    ArrayPush(items, fmt(x, depth, seen));
  }
  return items;
}

function inspectObject(v, depth, seen) {
  if (v instanceof Error) {
    const stack = typeof v.stack === 'string' ? v.stack : '';
    return stack.includes(String(v.message)) ? stack : `${v.name}: ${v.message}${stack ? `\n${stack}` : ''}`;
  }
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? 'Invalid Date' : v.toISOString();
  if (v instanceof RegExp) return String(v);
  if (v instanceof Promise) return 'Promise { <unknown> }';
  if (v instanceof WeakMap || v instanceof WeakSet) return `${ctorName(v)} { <items unknown> }`;
  if (v instanceof String || v instanceof Number || v instanceof Boolean) {
    return `[${ctorName(v)}: ${inspect(v.valueOf(), depth, seen)}]`;
  }
  const name = ctorName(v);
  const platform = platformClassOf(v);
  if (depth < 0) return `[${platform ? platform.name : Array.isArray(v) ? 'Array' : name}]`;
  const next = depth - 1;
  if (Array.isArray(v)) return wrap('', listItems(v, next, seen, inspect), '[', ']');
  if (v instanceof ArrayBuffer) return `ArrayBuffer { byteLength: ${v.byteLength} }`;
  if (ArrayBuffer.isView(v)) {
    if (v instanceof DataView) return `DataView { byteLength: ${v.byteLength}, byteOffset: ${v.byteOffset} }`;
    return wrap(`${name}(${v.length}) `, listItems(v, next, seen, inspect), '[', ']');
  }
  if (v instanceof Map) {
    const items = listItems(v, next, seen, ([k, x]) => `${inspect(k, next, seen)} => ${inspect(x, next, seen)}`);
    return wrap(`${name}(${v.size}) `, items, '{', '}');
  }
  if (v instanceof Set) return wrap(`${name}(${v.size}) `, listItems(v, next, seen, inspect), '{', '}');
  if (platform) {
    // Platform objects keep their state behind accessors; show what the accessors return.
    const shown = platform.inspect ? platform.inspect(v) : accessorEntries(v);
    if (shown instanceof Map) return wrap(`${platform.name} `, listItems(shown, next, seen, ([k, x]) => `${inspect(k, next, seen)} => ${inspect(x, next, seen)}`), '{', '}');
    return wrap(`${platform.name} `, ownEntries(shown, next, seen), '{', '}');
  }
  const prefix = name === 'Object' ? '' : `${name} `;
  return wrap(prefix, ownEntries(v, next, seen), '{', '}');
}

function accessorEntries(v) {
  const out = {};
  for (let p = Object.getPrototypeOf(v); p !== null && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    for (const [k, d] of Object.entries(Object.getOwnPropertyDescriptors(p))) {
      if (!d.get || k in out || k === 'body') continue;
      try {
        out[k] = v[k];
      } catch {
        // an accessor that throws is left out rather than breaking the log line
      }
    }
  }
  return out;
}

export function inspect(v, depth = 2, seen = []) {
  switch (typeof v) {
    case 'string': return quote(v);
    case 'number': return Object.is(v, -0) ? '-0' : String(v);
    case 'bigint': return `${v}n`;
    case 'symbol': return v.toString();
    case 'function': return functionText(v);
    case 'undefined': return 'undefined';
    case 'boolean': return String(v);
  }
  if (v === null) return 'null';
  if (ArrayIncludes(seen, v)) return '[Circular]';
  ArrayPush(seen, v);
  try {
    return inspectObject(v, depth, seen);
  } finally {
    ArrayPop(seen);
  }
}

const show = (a) => (typeof a === 'string' ? a : inspect(a));

/** console.log's argument formatting, including printf-style %s %d %i %f %j %o %O %c. */
export function format(args) {
  if (args.length === 0) return '';
  let rest = 1;
  let out;
  const first = args[0];
  if (typeof first === 'string' && args.length > 1 && first.includes('%')) {
    out = first.replace(/%[sdifjoOc%]/g, (m) => {
      if (m === '%%') return '%';
      if (rest >= args.length) return m;
      const a = args[rest++];
      switch (m[1]) {
        case 's': return typeof a === 'bigint' ? `${a}n` : typeof a === 'symbol' ? a.toString() : isObj(a) ? inspect(a, 1) : String(a);
        case 'd': case 'i': {
          if (typeof a === 'bigint') return `${a}n`;
          if (typeof a === 'symbol') return 'NaN';
          const n = Number(a);
          return String(m[1] === 'i' ? Math.trunc(n) : n);
        }
        case 'f': return typeof a === 'symbol' ? 'NaN' : String(parseFloat(a));
        case 'j':
          try { return JSON.stringify(a); } catch { return '[Circular]'; }
        case 'o': case 'O': return inspect(a, 4);
        default: return '';
      }
    });
  } else {
    out = show(first);
  }
  for (; rest < args.length; rest++) out += ` ${show(args[rest])}`;
  return out;
}

const isObj = (a) => a !== null && typeof a === 'object';

let indent = '';
const counts = new Map();
const timers = new Map();

function emit(level, args) {
  let message = format(args);
  if (indent) message = indent + message.replace(/\n/g, `\n${indent}`);
  try {
    host.log(level, message);
  } catch {
    // a log line that cannot be delivered must not break the code that logged it
  }
}

/** Reports an exception nothing caught (a timer callback's, an event listener's). */
export function reportError(err) {
  emit('error', ['Uncaught', err]);
}

const label = (l) => (l === undefined ? 'default' : String(l));

export const console = {
  log(...args) { emit('log', args); },
  info(...args) { emit('info', args); },
  warn(...args) { emit('warn', args); },
  error(...args) { emit('error', args); },
  debug(...args) { emit('debug', args); },
  trace(...args) {
    const holder = {};
    Error.captureStackTrace(holder, console.trace);
    emit('debug', [`Trace: ${format(args)}${String(holder.stack).replace(/^Error/, '')}`]);
  },
  dir(value) { emit('log', [inspect(value)]); },
  dirxml(...args) { emit('log', args); },
  table(...args) { emit('log', args); },
  assert(condition, ...args) {
    if (condition) return;
    if (typeof args[0] === 'string') args[0] = `Assertion failed: ${args[0]}`;
    else ArrayUnshift(args, 'Assertion failed');
    emit('error', args);
  },
  count(name) {
    const l = label(name);
    const n = (MapGet(counts, l) ?? 0) + 1;
    MapSet(counts, l, n);
    emit('info', [`${l}: ${n}`]);
  },
  countReset(name) { MapDelete(counts, label(name)); },
  time(name) { MapSet(timers, label(name), Date.now()); },
  timeLog(name, ...args) {
    const l = label(name);
    const start = MapGet(timers, l);
    if (start === undefined) emit('warn', [`Timer '${l}' does not exist`]);
    else emit('info', [`${l}: ${Date.now() - start}ms`, ...args]);
  },
  timeEnd(name) {
    console.timeLog(name);
    MapDelete(timers, label(name));
  },
  group(...args) {
    if (args.length) emit('log', args);
    indent += '  ';
  },
  groupCollapsed(...args) { console.group(...args); },
  groupEnd() { indent = indent.slice(2); },
};
