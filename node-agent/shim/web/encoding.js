// UTF-8, the only encoding the platform speaks: TextEncoder/TextDecoder and the helpers
// the other modules use to turn strings into bytes and back.
import { bytesOf, requireArgs } from './util.js';
import { ArrayIncludes } from './primordials.js';

/**
 * Encodes as much of str as fits into out. Lone surrogates become U+FFFD, as the
 * USVString conversion the Encoding standard starts with requires.
 */
function encodeInto(str, out) {
  const n = str.length;
  const m = out.length;
  let i = 0;
  let j = 0;
  while (i < n) {
    let c = str.charCodeAt(i);
    if (c < 0x80) {
      if (j >= m) break;
      out[j++] = c;
      i++;
      continue;
    }
    let units = 1;
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = c <= 0xdbff && i + 1 < n ? str.charCodeAt(i + 1) : 0;
      if ((d & 0xfc00) === 0xdc00) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        units = 2;
      } else {
        c = 0xfffd;
      }
    }
    if (c < 0x800) {
      if (j + 2 > m) break;
      out[j++] = 0xc0 | (c >> 6);
    } else if (c < 0x10000) {
      if (j + 3 > m) break;
      out[j++] = 0xe0 | (c >> 12);
      out[j++] = 0x80 | ((c >> 6) & 63);
    } else {
      if (j + 4 > m) break;
      out[j++] = 0xf0 | (c >> 18);
      out[j++] = 0x80 | ((c >> 12) & 63);
      out[j++] = 0x80 | ((c >> 6) & 63);
    }
    out[j++] = 0x80 | (c & 63);
    i += units;
  }
  return { read: i, written: j };
}

export function utf8Encode(str) {
  const n = str.length;
  // Sizing exactly first avoids allocating 3 bytes per UTF-16 unit and copying after.
  let len = n;
  for (let i = 0; i < n; i++) {
    const c = str.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) len += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < n && (str.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      len += 2;
      i++;
    } else len += 2;
  }
  const out = new Uint8Array(len);
  encodeInto(str, out);
  return out;
}

// String.fromCharCode.apply takes arguments on the stack; keep each call well below the limit.
const CHUNK = 0x2000;

function unitsToString(units, length) {
  if (length <= CHUNK) return String.fromCharCode.apply(null, units.subarray(0, length));
  let s = '';
  for (let i = 0; i < length; i += CHUNK) s += String.fromCharCode.apply(null, units.subarray(i, Math.min(i + CHUNK, length)));
  return s;
}

const isAscii = (u8) => {
  for (let i = 0; i < u8.length; i++) if (u8[i] > 0x7f) return false;
  return true;
};

/**
 * The Encoding standard's UTF-8 decoder, as a state machine that can be fed in pieces.
 * Invalid sequences become U+FFFD (the "maximal subpart" rule) or, when fatal, throw.
 */
class Utf8Decoder {
  constructor(fatal, ignoreBOM) {
    this.fatal = fatal;
    this.ignoreBOM = ignoreBOM;
    this.reset();
  }

  reset() {
    this.cp = 0;
    this.seen = 0;
    this.needed = 0;
    this.lower = 0x80;
    this.upper = 0xbf;
    this.bomChecked = false;
  }

  fail() {
    if (this.fatal) {
      this.reset();
      throw new TypeError('The encoded data was not valid for encoding utf-8');
    }
    return 0xfffd;
  }

  decode(u8, stream) {
    let units;
    let k = 0;
    if (this.needed === 0 && isAscii(u8)) {
      units = u8;
      k = u8.length;
    } else {
      // Each byte yields at most one UTF-16 unit, except a completed 4-byte sequence
      // (2 units for its last byte) and the U+FFFD for an incomplete tail.
      units = new Uint16Array(u8.length + 2);
      const emit = (cp) => {
        if (cp < 0x10000) units[k++] = cp;
        else {
          cp -= 0x10000;
          units[k++] = 0xd800 + (cp >> 10);
          units[k++] = 0xdc00 + (cp & 0x3ff);
        }
      };
      for (let i = 0; i < u8.length; i++) {
        const b = u8[i];
        if (this.needed === 0) {
          if (b < 0x80) units[k++] = b;
          else if (b >= 0xc2 && b <= 0xdf) { this.needed = 1; this.cp = b & 0x1f; }
          else if (b >= 0xe0 && b <= 0xef) {
            if (b === 0xe0) this.lower = 0xa0;
            if (b === 0xed) this.upper = 0x9f;
            this.needed = 2;
            this.cp = b & 0xf;
          } else if (b >= 0xf0 && b <= 0xf4) {
            if (b === 0xf0) this.lower = 0x90;
            if (b === 0xf4) this.upper = 0x8f;
            this.needed = 3;
            this.cp = b & 7;
          } else emit(this.fail());
          continue;
        }
        if (b < this.lower || b > this.upper) {
          this.cp = this.needed = this.seen = 0;
          this.lower = 0x80;
          this.upper = 0xbf;
          emit(this.fail());
          i--; // the byte may start the next sequence
          continue;
        }
        this.lower = 0x80;
        this.upper = 0xbf;
        this.cp = (this.cp << 6) | (b & 0x3f);
        if (++this.seen === this.needed) {
          const cp = this.cp;
          this.cp = this.needed = this.seen = 0;
          emit(cp);
        }
      }
      if (!stream && this.needed !== 0) {
        this.cp = this.needed = this.seen = 0;
        this.lower = 0x80;
        this.upper = 0xbf;
        emit(this.fail());
      }
    }
    let start = 0;
    if (!this.ignoreBOM && !this.bomChecked && k > 0) {
      this.bomChecked = true;
      if (units !== u8 && units[0] === 0xfeff) start = 1;
    }
    const s = start === 0 ? unitsToString(units, k) : unitsToString(units.subarray(1), k - 1);
    if (!stream) this.reset();
    return s;
  }
}

/** Decodes whole UTF-8 bytes, replacing errors; stripBOM as the Body mixin's "UTF-8 decode". */
export function utf8Decode(u8, stripBOM) {
  return new Utf8Decoder(false, !stripBOM).decode(u8, false);
}

export class TextEncoder {
  get encoding() {
    return 'utf-8';
  }

  encode(input = '') {
    return utf8Encode(String(input));
  }

  encodeInto(source, destination) {
    requireArgs(arguments.length, 2, 'TextEncoder.encodeInto');
    if (!(destination instanceof Uint8Array)) throw new TypeError('TextEncoder.encodeInto: the destination must be a Uint8Array');
    return encodeInto(String(source), destination);
  }
}

const UTF8_LABELS = ['utf-8', 'utf8', 'unicode-1-1-utf-8', 'unicode11utf8', 'unicode20utf8', 'x-unicode20utf8'];

export class TextDecoder {
  #d;

  constructor(label = 'utf-8', options = undefined) {
    const name = String(label).trim().toLowerCase();
    if (!ArrayIncludes(UTF8_LABELS, name)) throw new RangeError(`TextDecoder: the encoding "${label}" is not supported (only utf-8 is)`);
    this.#d = new Utf8Decoder(Boolean(options?.fatal), Boolean(options?.ignoreBOM));
  }

  get encoding() {
    return 'utf-8';
  }

  get fatal() {
    return this.#d.fatal;
  }

  get ignoreBOM() {
    return this.#d.ignoreBOM;
  }

  decode(input = undefined, options = undefined) {
    const bytes = input === undefined ? new Uint8Array(0) : bytesOf(input, 'TextDecoder.decode');
    return this.#d.decode(bytes, Boolean(options?.stream));
  }
}
