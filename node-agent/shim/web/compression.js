// CompressionStream and DecompressionStream (gzip, deflate, deflate-raw): pako (MIT AND
// Zlib, the zlib port in JS) run inside the isolate, so what a stream inflates is the
// worker's own memory and CPU: a decompression bomb meets the isolate's memory and CPU
// limits, never the agent's.
import { TransformStream } from './streams.js';
import { requireArgs } from './util.js';
import { loadLib } from './lib.js';

// pako is loaded on first use (web/lib.js), not part of the snapshot: its module init makes
// typed arrays, which this V8's snapshot cannot hold, and most isolates never compress, so
// none carries its code until then.
let deflateModule;
let inflateModule;
const newDeflate = (opts) => new (deflateModule ??= loadLib('pako-deflate')).Deflate(opts);
const newInflate = (opts) => new (inflateModule ??= loadLib('pako-inflate')).Inflate(opts);

const FORMATS = ['gzip', 'deflate', 'deflate-raw'];
/** Input is fed to zlib this much at a time, so one write cannot make one giant output burst before the stream sees it. */
const SLICE = 16 * 1024;

function formatOf(what, format) {
  requireArgs(format === undefined ? 0 : 1, 1, what);
  const f = String(format);
  if (!FORMATS.includes(f)) throw new TypeError(`${what}: the format must be "gzip", "deflate" or "deflate-raw", not "${f}"`);
  return f;
}

function bytesOf(what, chunk) {
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new TypeError(`${what}: chunks must be ArrayBuffer or ArrayBufferView`);
}

function zlibStream(what, engine) {
  let out = null;
  engine.onData = (chunk) => { out.enqueue(chunk); };
  engine.onEnd = function onEnd(status) {
    // pako's own onEnd also joins the output chunks, which the stream has already passed on.
    this.err = status;
    this.msg = this.strm.msg;
  };
  const fail = () => new TypeError(`${what}: ${engine.msg || 'the data is not valid'}`);
  return new TransformStream({
    transform(chunk, controller) {
      const bytes = bytesOf(what, chunk);
      out = controller;
      for (let i = 0; i < bytes.length; i += SLICE) {
        if (engine.ended) throw new TypeError(`${what}: trailing bytes after the end of the compressed data`);
        engine.push(bytes.subarray(i, i + SLICE), false);
        if (engine.err) throw fail();
      }
    },
    flush(controller) {
      out = controller;
      if (!engine.ended) engine.push(new Uint8Array(0), true);
      if (engine.err || !engine.ended) throw engine.err ? fail() : new TypeError(`${what}: the compressed data ended early`);
    },
  });
}

export class CompressionStream {
  #ts;

  constructor(format) {
    const f = formatOf('CompressionStream', format);
    this.#ts = zlibStream('CompressionStream', newDeflate(f === 'gzip' ? { gzip: true } : f === 'deflate-raw' ? { raw: true } : {}));
  }

  get readable() { return this.#ts.readable; }
  get writable() { return this.#ts.writable; }
}

export class DecompressionStream {
  #ts;

  constructor(format) {
    const f = formatOf('DecompressionStream', format);
    this.#ts = zlibStream('DecompressionStream', newInflate({ windowBits: f === 'gzip' ? 31 : f === 'deflate-raw' ? -15 : 15 }));
  }

  get readable() { return this.#ts.readable; }
  get writable() { return this.#ts.writable; }
}
