// WebAssembly memory counted against the worker's memory limit. V8 allocates a
// WebAssembly.Memory outside the JS heap and counts it nowhere an embedder sees
// (isolated-vm's limit and `externally_allocated_size` both miss it): a 32 MiB worker held
// 768 MiB of it. So every memory an isolate makes, by `new WebAssembly.Memory` or declared
// in a module and made at instantiation, must have a maximum, and the isolate's memories'
// maxima together stay within its budget (the worker's memoryMiB, set by
// setWasmBudget at install). `memory.grow`, from JavaScript or from wasm code, can then
// never pass it: V8 refuses growth beyond a memory's maximum. A module's memory section
// is rewritten at compile time to carry such a maximum; the reservation is made when an
// instance (and so the memory) is made, and given back when the memory is collected.
//
// V8 adds the WebAssembly namespace to a context made from a snapshot only after
// deserializing it (there is none at snapshot time), so the wrapping is done by
// installWasmLimits, which the host's __edgeInstall runs before any worker code.
import { ReflectApply } from './primordials.js';

// Everything below is captured at snapshot time and used without the iterator protocol
// (no spread, no array destructuring, no for-of): a worker that replaced an intrinsic
// must not be able to change the bytes that reach V8 or the pages counted.
let WA;
let OrigMemory;
let OrigModule;
let OrigInstance;
let CompileErrorCtor;
const PAGE = 65536;
const U8 = Uint8Array;
const TypedArrayProto = Object.getPrototypeOf(Uint8Array.prototype);
const typedSet = TypedArrayProto.set;
const typedLength = Object.getOwnPropertyDescriptor(TypedArrayProto, 'length').get;
const viewBuffer = Object.getOwnPropertyDescriptor(TypedArrayProto, 'buffer').get;
const viewOffset = Object.getOwnPropertyDescriptor(TypedArrayProto, 'byteOffset').get;
const viewByteLength = Object.getOwnPropertyDescriptor(TypedArrayProto, 'byteLength').get;
const dataViewBuffer = Object.getOwnPropertyDescriptor(DataView.prototype, 'buffer').get;
const dataViewOffset = Object.getOwnPropertyDescriptor(DataView.prototype, 'byteOffset').get;
const dataViewByteLength = Object.getOwnPropertyDescriptor(DataView.prototype, 'byteLength').get;
const bufferByteLength = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, 'byteLength').get;
const isView = ArrayBuffer.isView;
const isDataView = (v) => { try { ReflectApply(dataViewBuffer, v, []); return true; } catch { return false; } };
const isArrayBuffer = (v) => { try { ReflectApply(bufferByteLength, v, []); return true; } catch { return false; } };
const floor = Math.floor;
const NumberCtor = Number;
const RangeErrorCtor = RangeError;
const TypeErrorCtor = TypeError;
const WeakMapCtor = WeakMap;
const weakMapGet = WeakMap.prototype.get;
const weakMapSet = WeakMap.prototype.set;
const FinalizationRegistryCtor = FinalizationRegistry;
const register = FinalizationRegistry.prototype.register;
const objectValues = Object.values;
const promiseThen = Promise.prototype.then;
const promiseResolve = Promise.resolve.bind(Promise);
const promiseReject = Promise.reject.bind(Promise);

let budgetPages = 0;
let reservedPages = 0;
/** Module -> the pages its instances' own memories may reach (set for every module a worker can make). */
const modulePages = new WeakMapCtor();
const released = new FinalizationRegistryCtor((pages) => { reservedPages -= pages; });


function overBudget(what, pages) {
  const mib = (n) => ((n * PAGE) / 1048576).toFixed(1);
  return new RangeErrorCtor(`${what}: ${mib(pages)} MiB of WebAssembly memory would put this worker over its memory limit (${mib(budgetPages)} MiB, ${mib(reservedPages)} MiB already reserved by its memories' maxima)`);
}

/** Counts `pages` until `owner` is collected; throws when they do not fit. */
function reserve(what, pages, owner) {
  if (pages > budgetPages - reservedPages) throw overBudget(what, pages);
  reservedPages += pages;
  ReflectApply(register, released, [owner, pages]);
}

/** A copy of the module's bytes that no worker code can change afterwards. */
function copyOf(source, what) {
  let buffer;
  let offset = 0;
  let length;
  if (isArrayBuffer(source)) {
    buffer = source;
    length = ReflectApply(bufferByteLength, source, []);
  } else if (isView(source) && isDataView(source)) {
    buffer = ReflectApply(dataViewBuffer, source, []);
    offset = ReflectApply(dataViewOffset, source, []);
    length = ReflectApply(dataViewByteLength, source, []);
  } else if (isView(source)) {
    buffer = ReflectApply(viewBuffer, source, []);
    offset = ReflectApply(viewOffset, source, []);
    length = ReflectApply(viewByteLength, source, []);
  } else {
    throw new TypeErrorCtor(`${what}: the argument must be a BufferSource`);
  }
  const out = new U8(length);
  ReflectApply(typedSet, out, [new U8(buffer, offset, length)]);
  return out;
}

/** [value, next position] as an object: no array destructuring. */
function readLeb(bytes, pos, end) {
  let value = 0;
  let scale = 1;
  for (let n = 0; ; n++) {
    if (pos >= end || n > 4) throw new CompileErrorCtor('WebAssembly: malformed LEB128 in the module');
    const b = bytes[pos++];
    value += (b & 0x7f) * scale;
    scale *= 128;
    if ((b & 0x80) === 0) return { value, pos };
  }
}

function lebLength(n) {
  let len = 1;
  while (n >= 128) { n = floor(n / 128); len++; }
  return len;
}

function writeLeb(out, pos, n) {
  for (;;) {
    const low = n % 128;
    n = floor(n / 128);
    out[pos++] = n > 0 ? low | 0x80 : low;
    if (n === 0) return pos;
  }
}

/**
 * The module's bytes with every memory it defines given a maximum within the budget,
 * and the pages those maxima add up to. Imported memories were made (and counted) by
 * the WebAssembly.Memory constructor below.
 */
function boundedModule(source, what) {
  const bytes = copyOf(source, what);
  const total = ReflectApply(typedLength, bytes, []);
  let pos = 8;
  while (pos < total) {
    const start = pos;
    const id = bytes[pos++];
    const size = readLeb(bytes, pos, total);
    pos = size.pos;
    const end = pos + size.value;
    if (end > total) break; // V8 reports the malformed module
    if (id !== 5) { pos = end; continue; }
    const count = readLeb(bytes, pos, end);
    let p = count.pos;
    // Up to 1 + 5 + 5 bytes per memory, and the count.
    const section = new U8(5 + count.value * 11);
    let w = writeLeb(section, 0, count.value);
    let pages = 0;
    for (let i = 0; i < count.value; i++) {
      if (p >= end) throw new CompileErrorCtor(`${what}: malformed memory section`);
      const flags = bytes[p++];
      if (flags & ~3) throw new CompileErrorCtor(`${what}: 64-bit and other extended memories are not supported`);
      const initial = readLeb(bytes, p, end);
      p = initial.pos;
      let maximum = budgetPages;
      if (flags & 1) {
        const max = readLeb(bytes, p, end);
        p = max.pos;
        maximum = max.value;
      }
      if (initial.value > budgetPages) throw overBudget(what, initial.value);
      if (maximum > budgetPages) maximum = budgetPages;
      if (maximum < initial.value) maximum = initial.value;
      pages += maximum;
      section[w++] = flags | 1;
      w = writeLeb(section, w, initial.value);
      w = writeLeb(section, w, maximum);
    }
    const out = new U8(start + 1 + lebLength(w) + w + (total - end));
    ReflectApply(typedSet, out, [new U8(ReflectApply(viewBuffer, bytes, []), 0, start), 0]);
    let o = start;
    out[o++] = 5;
    o = writeLeb(out, o, w);
    ReflectApply(typedSet, out, [new U8(ReflectApply(viewBuffer, section, []), 0, w), o]);
    ReflectApply(typedSet, out, [new U8(ReflectApply(viewBuffer, bytes, []), end, total - end), o + w]);
    return { bytes: out, pages };
  }
  return { bytes, pages: 0 };
}

function Memory(descriptor) {
  if (new.target === undefined) throw new TypeErrorCtor("WebAssembly.Memory: calling a constructor without 'new'");
  if (descriptor === null || typeof descriptor !== 'object') throw new TypeErrorCtor('WebAssembly.Memory: the argument must be an object');
  // Each property is read once: a getter cannot answer one thing to the check and another to V8.
  const initial = NumberCtor(descriptor.initial);
  const declared = descriptor.maximum;
  const shared = !!descriptor.shared;
  // No maximum, or one past the budget: as much as the budget has left.
  const left = budgetPages - reservedPages;
  let maximum = declared === undefined ? left : NumberCtor(declared);
  if (!(initial >= 0 && initial <= left)) throw overBudget('new WebAssembly.Memory', initial);
  if (!(maximum <= left)) maximum = left;
  if (maximum < initial) maximum = initial;
  if (maximum > budgetPages - reservedPages) throw overBudget('new WebAssembly.Memory', maximum);
  const memory = new OrigMemory({ initial, maximum, shared });
  reserve('new WebAssembly.Memory', maximum, memory);
  return memory;
}

/** The platform's own module the next `new WebAssembly.Module` returns (provideNextModule). */
let provided = null;

/**
 * The platform's own modules (HTMLRewriter's lol-html), compiled once per process by the
 * host with a memory maximum of `pages` and handed in compiled: the next
 * `new WebAssembly.Module` (the library's glue calls it) returns `module` instead of
 * compiling, counted like any other module when it is instantiated.
 */
export function provideNextModule(module, pages) {
  if (module === null) { provided = null; return; }
  if (!(module instanceof OrigModule)) throw new TypeErrorCtor('provideNextModule: not a WebAssembly.Module');
  if (!(pages >= 0 && pages <= budgetPages)) throw overBudget('provideNextModule', pages);
  provided = { module, pages };
}

/** `share` of this isolate's budget, in pages. */
export function budgetShare(share) {
  return floor(budgetPages * share);
}

function Module(source) {
  if (new.target === undefined) throw new TypeErrorCtor("WebAssembly.Module: calling a constructor without 'new'");
  if (provided !== null) {
    const p = provided;
    provided = null;
    ReflectApply(weakMapSet, modulePages, [p.module, p.pages]);
    return p.module;
  }
  const bounded = boundedModule(source, 'new WebAssembly.Module');
  const module = new OrigModule(bounded.bytes);
  ReflectApply(weakMapSet, modulePages, [module, bounded.pages]);
  return module;
}

function instanceOf(module, imports, what) {
  const pages = ReflectApply(weakMapGet, modulePages, [module]);
  if (pages === undefined) throw new TypeErrorCtor(`${what}: the module was not made by WebAssembly.Module or WebAssembly.compile`);
  if (pages > budgetPages - reservedPages) throw overBudget(what, pages);
  // Reserved before instantiating: the imports' getters and the start function run worker
  // code, which must find these pages already taken.
  reservedPages += pages;
  let instance;
  try {
    instance = new OrigInstance(module, imports);
  } catch (err) {
    reservedPages -= pages;
    throw err;
  }
  if (pages > 0) {
    // The memory may outlive the instance when it is exported: count it until both are gone.
    const exported = objectValues(instance.exports);
    let owner = instance;
    for (let i = 0; i < exported.length; i++) if (exported[i] instanceof OrigMemory) owner = exported[i];
    ReflectApply(register, released, [owner, pages]);
  }
  return instance;
}

function Instance(module, imports) {
  if (new.target === undefined) throw new TypeErrorCtor("WebAssembly.Instance: calling a constructor without 'new'");
  return instanceOf(module, imports, 'new WebAssembly.Instance');
}

/**
 * Compiles synchronously, in the worker's own CPU time, and answers with a settled promise:
 * isolated-vm never delivers the completion of V8's asynchronous compilation, so
 * `await WebAssembly.compile(bytes)` used to hang until the request's wall-time limit.
 */
function compile(source) {
  try {
    const bounded = boundedModule(source, 'WebAssembly.compile');
    const module = new OrigModule(bounded.bytes);
    ReflectApply(weakMapSet, modulePages, [module, bounded.pages]);
    return promiseResolve(module);
  } catch (err) {
    return promiseReject(err);
  }
}

function instantiate(source, imports) {
  if (source instanceof OrigModule) {
    try {
      return promiseResolve(instanceOf(source, imports, 'WebAssembly.instantiate'));
    } catch (err) {
      return promiseReject(err);
    }
  }
  return ReflectApply(promiseThen, compile(source), [(module) => ({ module, instance: instanceOf(module, imports, 'WebAssembly.instantiate') })]);
}

/**
 * Replaces WebAssembly's constructors and compile/instantiate with the counting ones, with
 * this isolate's budget (the worker's memoryMiB). The originals stay reachable only from
 * here: the prototypes' `constructor` names the wrappers, and the namespace is frozen so a
 * worker cannot put them back.
 */
export function installWasmLimits(g, memoryMiB) {
  budgetPages = floor((NumberCtor(memoryMiB) * 1024 * 1024) / PAGE);
  WA = g.WebAssembly;
  if (WA === undefined) return;
  OrigMemory = WA.Memory;
  OrigModule = WA.Module;
  OrigInstance = WA.Instance;
  CompileErrorCtor = WA.CompileError;
  Memory.prototype = OrigMemory.prototype;
  Module.prototype = OrigModule.prototype;
  Module.exports = OrigModule.exports;
  Module.imports = OrigModule.imports;
  Module.customSections = OrigModule.customSections;
  Instance.prototype = OrigInstance.prototype;
  Object.defineProperty(OrigMemory.prototype, 'constructor', { value: Memory, writable: false, enumerable: false, configurable: false });
  Object.defineProperty(OrigModule.prototype, 'constructor', { value: Module, writable: false, enumerable: false, configurable: false });
  Object.defineProperty(OrigInstance.prototype, 'constructor', { value: Instance, writable: false, enumerable: false, configurable: false });
  const members = { Memory, Module, Instance, compile, instantiate };
  for (const name of Object.keys(members)) {
    Object.defineProperty(WA, name, { value: members[name], writable: false, enumerable: false, configurable: false });
  }
  for (const name of ['compileStreaming', 'instantiateStreaming']) {
    if (name in WA) delete WA[name];
  }
  Object.freeze(WA);
  for (const cls of [Memory, Module, Instance, OrigMemory.prototype, OrigModule.prototype, OrigInstance.prototype]) Object.freeze(cls);
}
