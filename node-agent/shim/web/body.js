// The Body mixin shared by Request and Response: what a body can be made from, reading
// it once, cloning it, and handing it to the runtime.
import { utf8Decode, utf8Encode } from './encoding.js';
import { URLSearchParams } from './url.js';
import { Blob, bytesOfBlob, makeBlob } from './blob.js';
import { FormData, encodeMultipart, parseFormData } from './form-data.js';
import { isDisturbed, isLocked, isReadableStream, readAllChunks, spentStream, streamOfBytes, teeStream } from './streams.js';
import { bytesOf, concatBytes, isBufferSource, toArrayBuffer } from './util.js';

export const BODY_USED = 'Body has already been used. It can only be used once. Use tee() first if you need to read it twice.';

/**
 * A body made from a string, kept as the string until someone needs its bytes: most such
 * bodies are only ever sent, and the host encodes UTF-8 natively far faster than JS can
 * (and a body read back with text() or json() needs no round trip at all).
 */
class TextSource {
  constructor(text) {
    this.text = text;
    this.bytes = null;
  }
}

export const textSource = (text) => new TextSource(text);

function bytesOfSource(source) {
  if (!(source instanceof TextSource)) return source;
  if (source.bytes === null) source.bytes = utf8Encode(source.text);
  return source.bytes;
}

/** Fetch's "extract a body": { source, type } where type is the default Content-Type or null. */
export function extractBody(init, what) {
  if (typeof init === 'string') return { source: new TextSource(init), type: 'text/plain;charset=UTF-8' };
  if (isBufferSource(init)) return { source: bytesOf(init, what).slice(), type: null };
  if (isReadableStream(init)) {
    if (isLocked(init) || isDisturbed(init)) throw new TypeError(`${what}: the body ReadableStream is locked or has already been read`);
    return { source: init, type: null };
  }
  if (init instanceof URLSearchParams) return { source: new TextSource(init.toString()), type: 'application/x-www-form-urlencoded;charset=UTF-8' };
  if (init instanceof Blob) return { source: bytesOfBlob(init), type: init.type || null };
  if (init instanceof FormData) {
    const { bytes, type } = encodeMultipart(init);
    return { source: bytes, type };
  }
  return { source: new TextSource(String(init)), type: 'text/plain;charset=UTF-8' };
}

/**
 * A body: source is null, a Uint8Array that is never mutated (so clones share it), or a
 * ReadableStream; stream is the ReadableStream made on demand when `body` is read from a
 * byte source; headers are the owner's (for the Content-Type blob() and formData() use).
 */
export function newBody(source, headers) {
  return { source, stream: null, used: false, headers };
}

const streamOf = (b) => (isReadableStream(b.source) ? b.source : b.stream);

function isUsed(b) {
  if (b.used) return true;
  const st = streamOf(b);
  return st !== null && isDisturbed(st);
}

function checkUsable(b, what) {
  if (isUsed(b)) throw new TypeError(`${what}: ${BODY_USED}`);
  const st = streamOf(b);
  if (st !== null && isLocked(st)) throw new TypeError(`${what}: the body stream is locked to a reader`);
}

/**
 * Reads the whole body. fresh tells whether bytes is a new buffer the caller may hand
 * out as is (otherwise it is shared with the body's source or a tee branch).
 */
async function consume(b, what) {
  checkUsable(b, what);
  if (b.source === null) return { bytes: new Uint8Array(0), fresh: true };
  b.used = true;
  const st = streamOf(b);
  if (st === null) return { bytes: bytesOfSource(b.source), fresh: false };
  const { chunks, total } = await readAllChunks(st, what);
  if (chunks.length === 1) return { bytes: chunks[0], fresh: false };
  return { bytes: concatBytes(chunks, total), fresh: true };
}

/**
 * Defines the Body members on cls.prototype. stateOf(obj) gives the object's body (it
 * throws a TypeError for an object of another class, as a brand check should).
 */
export function mixinBody(cls, stateOf) {
  const members = {
    get body() {
      const b = stateOf(this);
      if (b.source === null) return null;
      if (isReadableStream(b.source)) return b.source;
      if (b.stream === null) b.stream = b.used ? spentStream() : streamOfBytes(bytesOfSource(b.source));
      return b.stream;
    },
    get bodyUsed() {
      return isUsed(stateOf(this));
    },
    async arrayBuffer() {
      const { bytes, fresh } = await consume(stateOf(this), 'arrayBuffer');
      return fresh && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes.buffer : toArrayBuffer(bytes);
    },
    async bytes() {
      const { bytes, fresh } = await consume(stateOf(this), 'bytes');
      return fresh ? bytes : bytes.slice();
    },
    async text() {
      const b = stateOf(this);
      const text = takeText(b, 'text');
      return text !== null ? text : utf8Decode((await consume(b, 'text')).bytes, true);
    },
    async json() {
      const b = stateOf(this);
      const text = takeText(b, 'json');
      return JSON.parse(text !== null ? text : utf8Decode((await consume(b, 'json')).bytes, true));
    },
    async blob() {
      const b = stateOf(this);
      const { bytes, fresh } = await consume(b, 'blob');
      return makeBlob(fresh ? bytes : bytes.slice(), b.headers.get('content-type') ?? '');
    },
    async formData() {
      const b = stateOf(this);
      const type = b.headers.get('content-type');
      return parseFormData((await consume(b, 'formData')).bytes, type);
    },
  };
  const descriptors = Object.getOwnPropertyDescriptors(members);
  for (const d of Object.values(descriptors)) d.enumerable = false;
  Object.defineProperties(cls.prototype, descriptors);
}

/**
 * A string body read as text: the string itself (made well-formed, as a UTF-8 round trip
 * would), without encoding and decoding it. null when the body is not an untouched string.
 */
function takeText(b, what) {
  if (!(b.source instanceof TextSource) || b.stream !== null) return null;
  checkUsable(b, what);
  b.used = true;
  return b.source.text.toWellFormed();
}

/** clone(): the clone's body; byte bodies are shared (never mutated), a stream is teed. */
export function cloneBody(b, headers, what) {
  checkUsable(b, what);
  let source = b.source;
  if (isReadableStream(source)) {
    const branches = teeStream(source);
    b.source = branches[0];
    source = branches[1];
  }
  return newBody(source, headers);
}

/** new Request(request): the new request takes the body; the old one counts as used. */
export function transferBody(b, headers) {
  if (b.source !== null) {
    checkUsable(b, 'Request');
    b.used = true;
  }
  return newBody(b.source, headers);
}

/**
 * The body for the runtime: null, a string (a body made from text, not yet encoded: the
 * host encodes it to UTF-8), a Uint8Array or a ReadableStream; marks it used.
 */
export function takeBody(b, what) {
  if (b.source === null) return null;
  checkUsable(b, what);
  b.used = true;
  if (b.source instanceof TextSource) return b.source.bytes ?? b.source.text;
  return b.source;
}

/** A subrequest's body as bytes (a stream is read to its end first). */
export async function bodyBytes(b, what) {
  if (b.source === null) return null;
  return (await consume(b, what)).bytes;
}
