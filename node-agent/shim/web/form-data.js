// FormData, and its two body encodings: multipart/form-data (written and parsed) and
// application/x-www-form-urlencoded (parsed; written via URLSearchParams).
import { utf8Decode, utf8Encode } from './encoding.js';
import { Blob, File, bytesOfBlob } from './blob.js';
import { parseUrlencoded } from './url.js';
import { concatBytes, mixinPairIteration, requireArgs } from './util.js';
import { ArrayFilter, ArrayFind, ArrayFindIndex, ArrayMap, ArrayPush, ArraySome, MapGet, MapSet } from './primordials.js';

const usv = (v) => String(v).toWellFormed();

function entry(name, value, filename, withFilename) {
  if (value instanceof Blob) {
    if (!(value instanceof File) || withFilename) {
      const fileName = withFilename ? String(filename) : value instanceof File ? value.name : 'blob';
      value = new File([value], fileName, { type: value.type, lastModified: value instanceof File ? value.lastModified : undefined });
    }
    return [usv(name), value];
  }
  if (withFilename) throw new TypeError('FormData: a filename can only be given with a Blob value');
  return [usv(name), usv(value)];
}

let listOf;

export class FormData {
  #list = [];

  constructor(form = undefined) {
    if (form !== undefined) throw new TypeError('FormData: there are no HTML forms here; construct it without arguments');
  }

  append(name, value, filename = undefined) {
    requireArgs(arguments.length, 2, 'FormData.append');
    ArrayPush(this.#list, entry(name, value, filename, arguments.length > 2));
  }

  delete(name) {
    requireArgs(arguments.length, 1, 'FormData.delete');
    const n = usv(name);
    this.#list = ArrayFilter(this.#list, (e) => e[0] !== n);
  }

  get(name) {
    requireArgs(arguments.length, 1, 'FormData.get');
    const n = usv(name);
    const e = ArrayFind(this.#list, (x) => x[0] === n);
    return e === undefined ? null : e[1];
  }

  getAll(name) {
    requireArgs(arguments.length, 1, 'FormData.getAll');
    const n = usv(name);
    return ArrayMap(ArrayFilter(this.#list, (e) => e[0] === n), (e) => e[1]);
  }

  has(name) {
    requireArgs(arguments.length, 1, 'FormData.has');
    const n = usv(name);
    return ArraySome(this.#list, (e) => e[0] === n);
  }

  set(name, value, filename = undefined) {
    requireArgs(arguments.length, 2, 'FormData.set');
    const e = entry(name, value, filename, arguments.length > 2);
    const i = ArrayFindIndex(this.#list, (x) => x[0] === e[0]);
    if (i < 0) ArrayPush(this.#list, e);
    else {
      this.#list[i] = e;
      this.#list = ArrayFilter(this.#list, (x, j) => x[0] !== e[0] || j === i);
    }
  }

  static {
    mixinPairIteration(this, (o) => o.#list, 'FormData');
  }

  static {
    listOf = (f) => f.#list;
  }
}

const escapeName = (s) => s.replace(/\n/g, '%0A').replace(/\r/g, '%0D').replace(/"/g, '%22');
const CRLF = new Uint8Array([13, 10]);

export function encodeMultipart(form) {
  let boundary = '----EdgeFormBoundary';
  for (let i = 0; i < 16; i++) boundary += Math.floor(Math.random() * 16).toString(16);
  const chunks = [];
  const list = listOf(form);
  for (let i = 0; i < list.length; i++) {
    const name = list[i][0];
    const value = list[i][1];
    const head = `--${boundary}\r\nContent-Disposition: form-data; name="${escapeName(name)}"`;
    if (typeof value === 'string') {
      ArrayPush(chunks, utf8Encode(`${head}\r\n\r\n${value.replace(/\r(?!\n)|(?<!\r)\n/g, '\r\n')}\r\n`));
    } else {
      ArrayPush(chunks, utf8Encode(`${head}; filename="${escapeName(value.name)}"\r\nContent-Type: ${value.type || 'application/octet-stream'}\r\n\r\n`));
      ArrayPush(chunks, bytesOfBlob(value), CRLF);
    }
  }
  ArrayPush(chunks, utf8Encode(`--${boundary}--\r\n`));
  return { bytes: concatBytes(chunks), type: `multipart/form-data; boundary=${boundary}` };
}

// Multipart bodies are searched as one-char-per-byte strings, so offsets match the bytes.
function latin1(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x2000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x2000));
  return s;
}

const latin1ToUtf8 = (s) => utf8Decode(Uint8Array.from(s, (c) => c.charCodeAt(0)), false);

function parseMultipart(bytes, contentType) {
  const m = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  const bad = () => new TypeError('formData: the body is not valid multipart/form-data');
  if (!m) throw new TypeError('formData: the multipart/form-data Content-Type has no boundary');
  const delimiter = `--${m[1] ?? m[2]}`;
  const text = latin1(bytes);
  const form = new FormData();
  let pos = text.indexOf(delimiter);
  if (pos < 0) throw bad();
  for (;;) {
    pos += delimiter.length;
    if (text.startsWith('--', pos)) return form;
    const lineEnd = text.indexOf('\r\n', pos);
    const headEnd = lineEnd < 0 ? -1 : text.indexOf('\r\n\r\n', lineEnd);
    if (headEnd < 0) throw bad();
    const next = text.indexOf(`\r\n${delimiter}`, headEnd + 4);
    if (next < 0) throw bad();
    const headers = new Map();
    for (const line of text.slice(lineEnd + 2, headEnd).split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon > 0) MapSet(headers, line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    const disposition = MapGet(headers, 'content-disposition') ?? '';
    const name = /(?:^|;)\s*name="([^"]*)"/i.exec(disposition);
    if (!name) throw bad();
    const filename = /(?:^|;)\s*filename="([^"]*)"/i.exec(disposition);
    const content = bytes.subarray(headEnd + 4, next);
    if (filename) {
      form.append(latin1ToUtf8(name[1]), new File([content], latin1ToUtf8(filename[1]), { type: MapGet(headers, 'content-type') ?? '' }));
    } else {
      form.append(latin1ToUtf8(name[1]), utf8Decode(content, false));
    }
    pos = next + 2;
  }
}

/** The Body mixin's formData(): parses bytes according to the Content-Type. */
export function parseFormData(bytes, contentType) {
  const type = contentType ?? '';
  const essence = type.split(';')[0].trim().toLowerCase();
  if (essence === 'multipart/form-data') return parseMultipart(bytes, type);
  if (essence === 'application/x-www-form-urlencoded') {
    const form = new FormData();
    const pairs = parseUrlencoded(utf8Decode(bytes, true));
    for (let i = 0; i < pairs.length; i++) form.append(pairs[i][0], pairs[i][1]);
    return form;
  }
  throw new TypeError(`formData: cannot parse a body of type "${type}"; only multipart/form-data and application/x-www-form-urlencoded are supported`);
}
