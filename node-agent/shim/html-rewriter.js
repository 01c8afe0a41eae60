// HTMLRewriter (Workers' streaming HTML rewriter) inside the worker's own isolate:
// lol-html compiled to WebAssembly by html-rewriter-wasm (BSD-3-Clause; lol-html is
// BSD-3-Clause too). The parser's memory is a WebAssembly.Memory of this isolate, made
// through web/wasm.js's counting constructors, so a document that makes it grow past its
// share of the worker's memoryMiB stops this worker only; its CPU is this worker's CPU.
//
// Nothing of it is in the snapshot but code: the wasm module, compiled once per process by
// the host with this isolate's memory maximum (host.htmlRewriter('module')), is handed in
// the first time this isolate uses HTMLRewriter, and the glue's module body (which
// instantiates it) runs then, not at snapshot time: the snapshot holds no ArrayBuffer
// (see checkSnapshot in isolate/pool.ts).
//
// This file runs at snapshot time: it only defines things.
import { host } from './host.js';
import { budgetShare, provideNextModule } from './web/wasm.js';
import { TextDecoder, TextEncoder } from './web/encoding.js';
import { ReadableStream } from './web/streams.js';
import { Response, NULL_BODY_STATUSES } from './web/response.js';
import { Headers } from './web/headers.js';
import { ReflectApply } from './web/primordials.js';
import { loadLib } from './web/lib.js';

const g = globalThis;
const TypeErrorCtor = TypeError;
const ErrorCtor = Error;
const U8 = Uint8Array;
const isView = ArrayBuffer.isView;
const arrayIncludes = Array.prototype.includes;
const defineProperty = Object.defineProperty;
const getOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
const PAGE = 65536;

/**
 * The share of the worker's WebAssembly budget (its memoryMiB) lol-html's memory may grow
 * to: half, so the worker's own wasm modules keep the other half.
 */
const BUDGET_SHARE = 0.5;

const HTML_NS = 'http://www.w3.org/1999/xhtml';
/** lol-html's void elements (tag names that cannot have content in HTML). */
const VOID_ELEMENTS = ['area', 'base', 'basefont', 'bgsound', 'br', 'col', 'embed', 'hr', 'image', 'img', 'input', 'keygen', 'link', 'meta', 'param', 'source', 'track', 'wbr'];

function assert(value, message) {
  if (!value) throw new ErrorCtor(`HTMLRewriter: internal assertion failed${message ? `: ${message}` : ''}`);
}
assert.strictEqual = (actual, expected) => {
  if (actual !== expected) throw new ErrorCtor(`HTMLRewriter: internal assertion failed: ${String(actual)} !== ${String(expected)}`);
};

/** What the glue's Node requires get (they are left external in SHIM_BUILD_OPTIONS). */
function nodeModule(name) {
  switch (name) {
    case 'util': return { TextDecoder, TextEncoder };
    case 'assert': return assert;
    case 'path': return { join: () => 'html_rewriter_bg.wasm' };
    case 'fs': return {
      // The glue compiles what this returns; the module compiled once by the host is
      // what it gets instead (provideNextModule), so the compiled code is shared.
      readFileSync() {
        capPages = budgetShare(BUDGET_SHARE);
        provideNextModule(host.htmlRewriter('module', capPages), capPages);
        return new U8(0);
      },
    };
    // The glue asks for it as require(String.raw`./asyncify.js`), which esbuild cannot follow.
    // eslint-disable-next-line @typescript-eslint/no-require-imports, no-undef -- bundled by esbuild, evaluated at first use
    case './asyncify.js': return require('html-rewriter-wasm/dist/asyncify.js');
    default: throw new ErrorCtor(`HTMLRewriter: the glue asked for an unknown module ${String(name)}`);
  }
}

let lol = null;
/** The most pages lol-html's memory may have (set when it loads). */
let capPages = 0;
let loadError = null;
/** The wasm instance broke (a trap): this isolate cannot rewrite any more. */
let broken = null;

/**
 * The glue, evaluated on first use. Its own external requires go to the function the host
 * hands over (web/lib.js), asyncify.js's (bundled in the shim) through a `require` global
 * that exists only while it loads (esbuild's __require looks for one); no worker code runs
 * in between.
 */
function lolHtml() {
  if (lol !== null) return lol;
  if (loadError !== null) throw loadError;
  const hadRequire = getOwnPropertyDescriptor(g, 'require');
  const hadDirname = getOwnPropertyDescriptor(g, '__dirname');
  defineProperty(g, 'require', { value: nodeModule, writable: true, configurable: true, enumerable: false });
  defineProperty(g, '__dirname', { value: '', writable: true, configurable: true, enumerable: false });
  try {
    // Out of the snapshot (web/lib.js): the glue's module body runs here, at first use.
    const glue = loadLib('html-rewriter', nodeModule, '');
    addElementGetters(glue.Element.prototype);
    for (const cls of [glue.Element, glue.EndTag, glue.TextChunk, glue.Comment]) patchContent(cls.prototype);
    lol = glue;
    return lol;
  } catch (err) {
    loadError = err;
    throw err;
  } finally {
    // Unused when the glue never reached its `new WebAssembly.Module` (a worker that
    // replaced the WebAssembly global): the worker's own next module must not get it.
    provideNextModule(null);
    delete g.require;
    delete g.__dirname;
    if (hadRequire) defineProperty(g, 'require', hadRequire);
    if (hadDirname) defineProperty(g, '__dirname', hadDirname);
  }
}

/**
 * Loads lol-html and runs one small rewrite through it (its code paths compiled), while the
 * worker loads: called for workers whose source names HTMLRewriter. A failure is left for
 * the first real use to report.
 */
export function warmHtmlRewriter() {
  try {
    const glue = lolHtml();
    const rewriter = new glue.HTMLRewriter(() => {});
    rewriter.on('a', { element(el) { el.setAttribute('href', el.getAttribute('href') ?? ''); el.free(); } });
    // write() and end() run synchronously when no handler returns a promise.
    const ignore = () => {};
    ReflectApply(promiseThen, rewriter.write(new TextEncoder().encode('<a href="x">x</a>')), [undefined, ignore]);
    ReflectApply(promiseThen, rewriter.end(), [undefined, ignore]);
    rewriter.free();
  } catch {
    // the first HTMLRewriter use reports it
  }
}

function addElementGetters(proto) {
  const onEndTag = proto.onEndTag;
  defineProperty(proto, 'onEndTag', {
    value(handler) {
      if (typeof handler !== 'function') throw new TypeErrorCtor("Failed to execute 'onEndTag' on 'Element': parameter 1 is not of type 'Function'.");
      const run = ReflectApply(weakMapGet, elementRuns, [this]);
      return ReflectApply(onEndTag, this, [(tag) => {
        if (run === undefined) return ReflectApply(handler, this, [tag]);
        run.tokens[run.tokens.length] = tag;
        return settle(tag, ReflectApply(handler, this, [tag]), run);
      }]);
    },
    configurable: true,
    writable: true,
    enumerable: false,
  });
  // html-rewriter-wasm 0.4.1 has no canHaveContent: lol-html's rule for HTML elements.
  defineProperty(proto, 'canHaveContent', {
    get() { return !(this.namespaceURI === HTML_NS && ReflectApply(arrayIncludes, VOID_ELEMENTS, [String(this.tagName).toLowerCase()])); },
    configurable: true,
    enumerable: false,
  });
}

/** A trap (RuntimeError) leaves lol-html's state undefined: the host retires the isolate. */
function failed(err) {
  const RuntimeError = g.WebAssembly && g.WebAssembly.RuntimeError;
  if (!RuntimeError || !(err instanceof RuntimeError) || broken !== null) return;
  const memory = lol && lol.__wasm && lol.__wasm.memory;
  // A failed memory.grow is an abort (an `unreachable` trap) in Rust: call it exhaustion
  // when the memory had used most of its cap.
  let exhausted = false;
  try { exhausted = memory.buffer.byteLength / PAGE >= capPages / 2; } catch { /* no memory */ }
  broken = new ErrorCtor(`HTMLRewriter: the rewriter failed (${exhausted ? 'its memory reached this worker\'s limit' : err.message}); this isolate is retired`);
  try { host.htmlRewriter(exhausted ? 'exhausted' : 'crashed'); } catch { /* the host already knows */ }
}

const ELEMENT_KINDS = ['element', 'comments', 'text'];
const DOCUMENT_KINDS = ['doctype', 'comments', 'text', 'end'];

/**
 * The handlers object lol-html is given: each present handler called with the handlers
 * object as `this`, its token kept in `tokens` to be freed once the write that made it
 * returns. html-rewriter-wasm's glue never frees the objects it hands to handlers, so each
 * one would stay in lol-html's memory for good (about 40 bytes an element: 1.2 MiB more
 * per 1 MiB of links, the growth an earlier evaluation saw); and a token cannot be freed
 * while lol-html still holds it (an async handler's, until the write resumes). A token is
 * valid only during its handler, as on Workers.
 */
function freeing(handlers, kinds, run) {
  const tokens = run.tokens;
  const out = {};
  for (let i = 0; i < kinds.length; i++) {
    const fn = handlers[kinds[i]];
    if (fn === undefined || fn === null) continue;
    if (typeof fn !== 'function') throw new TypeErrorCtor(`HTMLRewriter: the ${kinds[i]} handler must be a function`);
    out[kinds[i]] = (token) => {
      tokens[tokens.length] = token;
      if (token instanceof lol.Element) ReflectApply(weakMapSet, elementRuns, [token, run]);
      return settle(token, ReflectApply(fn, handlers, [token]), run);
    };
  }
  return out;
}

const PromiseCtor = Promise;
const promiseThen = Promise.prototype.then;
const WeakMapCtor = WeakMap;
const weakMapGet = WeakMap.prototype.get;
const weakMapSet = WeakMap.prototype.set;
const weakMapHas = WeakMap.prototype.has;
const weakMapDelete = WeakMap.prototype.delete;

/** Element -> its transform's run, so an end tag handler's token is freed and settled with it. */
const elementRuns = new WeakMapCtor();

/**
 * What a handler's call comes to for lol-html: content calls deferred behind streamed
 * content are applied (lol-html waits, as for an async handler), and a rejection is kept
 * in `run` and thrown once the write returns: handed back into lol-html, it would resume
 * it in a state it refuses ("recursive use of an object").
 */
function settle(token, result, run) {
  const onError = (err) => { if (run.failure === null) run.failure = { err }; };
  const applyAfter = () => (ReflectApply(weakMapHas, deferred, [token]) ? applyDeferred(token) : undefined);
  if (result instanceof PromiseCtor) return ReflectApply(promiseThen, result, [applyAfter, onError]);
  if (ReflectApply(weakMapHas, deferred, [token])) return ReflectApply(promiseThen, applyDeferred(token), [undefined, onError]);
  return result;
}

// Streamed content (workerd: `before(response)`, `append(readableStream)`...): lol-html here
// takes strings only, so the content is read whole while lol-html waits, then inserted.
// Calls on the same token after a streamed one wait behind it, keeping their order.
const CONTENT_METHODS = ['before', 'after', 'prepend', 'append', 'replace', 'setInnerContent'];
/** Token -> the content calls waiting behind streamed content: { orig, content, options }. */
const deferred = new WeakMapCtor();
const streamed = (content) => content instanceof Response || content instanceof ReadableStream;

function patchContent(proto) {
  for (let i = 0; i < CONTENT_METHODS.length; i++) {
    const orig = proto[CONTENT_METHODS[i]];
    if (typeof orig !== 'function') continue;
    defineProperty(proto, CONTENT_METHODS[i], {
      value(content, options) {
        let ops = ReflectApply(weakMapGet, deferred, [this]);
        if (ops === undefined) {
          if (!streamed(content)) return ReflectApply(orig, this, [content, options]);
          ops = [];
          ReflectApply(weakMapSet, deferred, [this, ops]);
        }
        ops[ops.length] = { orig, content, options };
        return this;
      },
      configurable: true,
      writable: true,
      enumerable: false,
    });
  }
}

async function applyDeferred(token) {
  const ops = ReflectApply(weakMapGet, deferred, [token]);
  ReflectApply(weakMapDelete, deferred, [token]);
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i];
    const content = streamed(op.content) ? await new Response(op.content instanceof Response ? op.content.body : op.content).text() : op.content;
    ReflectApply(op.orig, token, [content, op.options]);
  }
}

/** Frees the tokens a write made (after it returned); none once the instance is broken. */
function freeTokens(tokens) {
  if (broken === null) for (let i = 0; i < tokens.length; i++) tokens[i].free();
  tokens.length = 0;
}


function checkHandlers(handlers, method) {
  if (handlers === null || (typeof handlers !== 'object' && typeof handlers !== 'function')) {
    throw new TypeErrorCtor(`Failed to execute '${method}' on 'HTMLRewriter': parameter 2 is not of type '${method === 'on' ? 'ElementHandlers' : 'DocumentHandlers'}'.`);
  }
}

function bytesOf(chunk) {
  if (chunk instanceof U8) return chunk;
  if (isView(chunk)) return new U8(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (chunk instanceof ArrayBuffer) return new U8(chunk);
  if (typeof chunk === 'string') return new TextEncoder().encode(chunk);
  throw new TypeErrorCtor('HTMLRewriter: the response body yielded a chunk that is not bytes');
}

export class HTMLRewriter {
  #element = [];
  #document = [];

  on(selector, handlers) {
    checkHandlers(handlers, 'on');
    const sel = String(selector);
    if (broken !== null) throw broken;
    // Parsed now, as workerd does: a bad selector is a TypeError here, not at transform.
    const glue = lolHtml();
    const probe = new glue.HTMLRewriter(() => {});
    try {
      probe.on(sel, {});
    } catch (err) {
      throw new TypeErrorCtor(err instanceof ErrorCtor ? err.message : String(err));
    } finally {
      probe.free();
    }
    this.#element[this.#element.length] = { selector: sel, handlers };
    return this;
  }

  onDocument(handlers) {
    checkHandlers(handlers, 'onDocument');
    this.#document[this.#document.length] = handlers;
    return this;
  }

  transform(response) {
    if (!(response instanceof Response)) throw new TypeErrorCtor("Failed to execute 'transform' on 'HTMLRewriter': parameter 1 is not of type 'Response'.");
    const element = this.#element.slice();
    const documentHandlers = this.#document.slice();
    const source = response.body;
    const headers = new Headers(response.headers);
    headers.delete('content-length');
    const init = { status: response.status, statusText: response.statusText, headers };
    if (ReflectApply(arrayIncludes, NULL_BODY_STATUSES, [response.status])) return new Response(null, init);
    let reader = null;
    let rewriter = null;
    let pending = [];
    let pendingBytes = 0;
    const flush = (controller) => {
      if (pendingBytes === 0) return false;
      const out = new U8(pendingBytes);
      let at = 0;
      for (let i = 0; i < pending.length; i++) { out.set(pending[i], at); at += pending[i].length; }
      pending = [];
      pendingBytes = 0;
      controller.enqueue(out);
      return true;
    };
    let busy = false;
    let done = false;
    const release = () => {
      if (rewriter !== null && !busy && broken === null) rewriter.free();
      rewriter = null;
    };
    const run = { tokens: [], failure: null };
    const step = async (work) => {
      busy = true;
      try {
        await work;
      } finally {
        busy = false;
        freeTokens(run.tokens);
      }
      if (run.failure !== null) throw run.failure.err;
      if (done) release();
    };
    const body = new ReadableStream({
      async pull(controller) {
        try {
          if (rewriter === null) {
            if (broken !== null) throw broken;
            const glue = lolHtml();
            // lol-html hands out many small pieces (a few per token): gathered and enqueued
            // once per source chunk, or the host would pull each piece on its own.
            rewriter = new glue.HTMLRewriter((chunk) => { pending[pending.length] = chunk; pendingBytes += chunk.length; });
            for (let i = 0; i < element.length; i++) rewriter.on(element[i].selector, freeing(element[i].handlers, ELEMENT_KINDS, run));
            for (let i = 0; i < documentHandlers.length; i++) rewriter.onDocument(freeing(documentHandlers[i], DOCUMENT_KINDS, run));
            reader = source === null ? null : source.getReader();
          }
          // One source chunk at a time, until something came out: a synchronous handler
          // streams the document through in chunks, never holding the whole of it.
          for (;;) {
            const next = reader === null ? { done: true } : await reader.read();
            if (next.done) {
              await step(rewriter.end());
              flush(controller);
              done = true;
              release();
              controller.close();
              return;
            }
            await step(rewriter.write(bytesOf(next.value)));
            if (flush(controller)) return;
          }
        } catch (err) {
          failed(err);
          done = true;
          release();
          if (reader !== null) reader.cancel(err).catch(() => {});
          throw err;
        }
      },
      cancel(reason) {
        done = true;
        release();
        if (reader !== null) return reader.cancel(reason);
        return undefined;
      },
    }, { highWaterMark: 0 });
    return new Response(body, init);
  }
}
