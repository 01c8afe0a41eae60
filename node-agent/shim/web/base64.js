// atob/btoa: forgiving-base64 over "binary strings" (one char per byte), as in HTML.
import { DOMException, requireArgs } from './util.js';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
// A plain array, not a Uint8Array: a typed array over 64 bytes made at the shim's top level
// would sit in the V8 snapshot as an ArrayBuffer backing store, which every new isolate
// allocates in a way that could abort the agent (see checkSnapshot in isolate/pool.ts).
const VALUES = new Array(128).fill(0);
for (let i = 0; i < 64; i++) VALUES[ALPHABET.charCodeAt(i)] = i;

export function btoa(data) {
  requireArgs(arguments.length, 1, 'btoa');
  const s = String(data);
  let out = '';
  for (let i = 0; i < s.length; i += 3) {
    const a = s.charCodeAt(i);
    const b = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
    const c = i + 2 < s.length ? s.charCodeAt(i + 2) : 0;
    if (a > 0xff || b > 0xff || c > 0xff) {
      throw new DOMException('btoa: the string contains characters outside of the Latin1 range', 'InvalidCharacterError');
    }
    out += ALPHABET[a >> 2] + ALPHABET[((a & 3) << 4) | (b >> 4)];
    out += i + 1 < s.length ? ALPHABET[((b & 15) << 2) | (c >> 6)] : '=';
    out += i + 2 < s.length ? ALPHABET[c & 63] : '=';
  }
  return out;
}

export function atob(data) {
  requireArgs(arguments.length, 1, 'atob');
  let s = String(data).replace(/[\t\n\f\r ]+/g, '');
  if (s.length % 4 === 0) s = s.replace(/==?$/, '');
  if (s.length % 4 === 1 || /[^A-Za-z0-9+/]/.test(s)) {
    throw new DOMException('atob: the string to be decoded is not correctly base64-encoded', 'InvalidCharacterError');
  }
  let out = '';
  let bits = 0;
  let acc = 0;
  for (let i = 0; i < s.length; i++) {
    acc = (acc << 6) | VALUES[s.charCodeAt(i)];
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += String.fromCharCode((acc >> bits) & 0xff);
    }
  }
  return out;
}
