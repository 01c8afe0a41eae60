// Blob and File: immutable bytes with a MIME type.
import { utf8Decode, utf8Encode } from './encoding.js';
import { streamOfBytes } from './streams.js';
import { INTERNAL, bytesOf, concatBytes, isBufferSource, isObject, requireArgs, toArrayBuffer } from './util.js';
import { ArrayPush } from './primordials.js';

let blobBytes;

const normalizeType = (t) => {
  const s = String(t);
  return /[^\x20-\x7e]/.test(s) ? '' : s.toLowerCase();
};

function relative(n, size) {
  const i = Math.trunc(Number(n)) || 0;
  return i < 0 ? Math.max(size + i, 0) : Math.min(i, size);
}

export class Blob {
  /** Never mutated, so slices and bodies can share it. */
  #bytes;
  #type;

  constructor(parts = undefined, options = undefined) {
    if (parts === INTERNAL) {
      this.#bytes = options.bytes;
      this.#type = options.type;
      return;
    }
    const chunks = [];
    if (parts !== undefined) {
      if (!isObject(parts) || typeof parts[Symbol.iterator] !== 'function') throw new TypeError('Blob: the parts must be a sequence');
      for (const p of parts) {
        if (p instanceof Blob) ArrayPush(chunks, p.#bytes);
        else if (isBufferSource(p)) ArrayPush(chunks, bytesOf(p, 'Blob'));
        else ArrayPush(chunks, utf8Encode(String(p)));
      }
    }
    this.#bytes = concatBytes(chunks);
    this.#type = options?.type === undefined ? '' : normalizeType(options.type);
  }

  get size() { return this.#bytes.byteLength; }
  get type() { return this.#type; }

  slice(start = 0, end = undefined, contentType = '') {
    const size = this.#bytes.byteLength;
    const from = relative(start, size);
    const to = end === undefined ? size : relative(end, size);
    return new Blob(INTERNAL, { bytes: this.#bytes.subarray(from, Math.max(from, to)), type: normalizeType(contentType) });
  }

  async arrayBuffer() { return toArrayBuffer(this.#bytes); }
  async bytes() { return this.#bytes.slice(); }
  async text() { return utf8Decode(this.#bytes, true); }
  stream() { return streamOfBytes(this.#bytes); }

  static {
    blobBytes = (b) => b.#bytes;
  }
}

export class File extends Blob {
  #name;
  #lastModified;

  constructor(bits, name, options = undefined) {
    requireArgs(arguments.length, 2, 'File');
    super(bits, options);
    this.#name = String(name);
    this.#lastModified = options?.lastModified === undefined ? Date.now() : Math.trunc(Number(options.lastModified)) || 0;
  }

  get name() { return this.#name; }
  get lastModified() { return this.#lastModified; }
}

/** The blob's bytes, shared (callers must not mutate them). */
export const bytesOfBlob = (b) => blobBytes(b);

export const makeBlob = (bytes, type) => new Blob(INTERNAL, { bytes, type: normalizeType(type) });
