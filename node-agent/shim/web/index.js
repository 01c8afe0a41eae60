// The Web APIs a worker sees, installed on the isolate's global object.
//
// Contract with ../index.js (the runtime):
//   installWebApis(g)      defines the Web API globals on g (at snapshot time)
//   makeRequest({url, method, headers, body})  body: null | Uint8Array | ReadableStream
//   bodyOf(response)       null | string | Uint8Array | ReadableStream (marks the body
//                          used; a string is a text body the host encodes to UTF-8)
//   responseParts(response) {status, statusText, headers: [name, value][]}, names lower-case,
//                          sorted and combined, set-cookie one entry per cookie
import { DOMException, platformPrototypes } from './util.js';
import { TextDecoder, TextEncoder } from './encoding.js';
import { atob, btoa } from './base64.js';
import { console } from './console.js';
import { CustomEvent, Event, EventTarget } from './event.js';
import { AbortController, AbortSignal } from './abort.js';
import { clearInterval, clearTimeout, queueMicrotask, scheduler, setInterval, setTimeout } from './timers.js';
import { structuredClone } from './structured-clone.js';
import { Crypto, CryptoKey, DigestStream, SubtleCrypto, crypto } from './crypto.js';
import { URL, URLSearchParams } from './url.js';
import { Headers, headerList } from './headers.js';
import {
  ByteLengthQueuingStrategy, CountQueuingStrategy, FixedLengthStream, IdentityTransformStream, ReadableStream,
  ReadableStreamDefaultController, ReadableStreamDefaultReader, TransformStream, TransformStreamDefaultController,
  WritableStream, WritableStreamDefaultController, WritableStreamDefaultWriter, bodyReader, fedStream,
} from './streams.js';
import { TextDecoderStream, TextEncoderStream } from './text-streams.js';
import { CompressionStream, DecompressionStream } from './compression.js';
import { Blob, File } from './blob.js';
import { FormData } from './form-data.js';
import { Request, abortRequest, makeRequest } from './request.js';
import { Response, bodyOf, responseParts } from './response.js';
import { fetch } from './fetch.js';
import { CloseEvent, ErrorEvent, MessageEvent, WebSocket, WebSocketPair } from './websocket.js';
import { WebSocketRequestResponsePair } from '../hibernation.js';
import { HTMLRewriter } from '../html-rewriter.js';

let timeOrigin = 0;
const performance = {
  // Taken on first use: a value read at snapshot time would be the snapshot's build time.
  get timeOrigin() {
    if (timeOrigin === 0) timeOrigin = Date.now();
    return timeOrigin;
  },
  now() {
    return Date.now() - performance.timeOrigin;
  },
};

const navigator = { userAgent: 'Cloudflare-Workers', hardwareConcurrency: 1 };

const CLASSES = {
  DOMException, TextEncoder, TextDecoder, TextEncoderStream, TextDecoderStream, CompressionStream, DecompressionStream, Event, EventTarget, CustomEvent,
  AbortController, AbortSignal, Crypto, CryptoKey, SubtleCrypto, DigestStream, URL, URLSearchParams, Headers, Request, Response, Blob, File,
  FormData, ReadableStream, ReadableStreamDefaultReader, ReadableStreamDefaultController, WritableStream,
  WritableStreamDefaultWriter, WritableStreamDefaultController, TransformStream, TransformStreamDefaultController,
  ByteLengthQueuingStrategy, CountQueuingStrategy, IdentityTransformStream, FixedLengthStream,
  WebSocket, WebSocketPair, MessageEvent, CloseEvent, ErrorEvent, WebSocketRequestResponsePair, HTMLRewriter,
};

const GLOBALS = {
  ...CLASSES,
  crypto, console, performance, navigator, scheduler,
  atob, btoa, structuredClone, fetch, setTimeout, clearTimeout, setInterval, clearInterval, queueMicrotask,
};

// Writable and configurable, as on Workers: a worker may wrap fetch or patch a prototype,
// at its top level or in a request (instrumentation such as Sentry's does it in its first
// request), and its later requests see the change. The runtime's request path does not go
// through them: it captured its constructors at snapshot time, and reads and feeds bodies
// through the streams' own state (streams.js bodyReader, fedStream).
const PLATFORM_GLOBALS = Object.keys(GLOBALS);

const entriesMap = (pairs) => new Map(pairs);
const INSPECT = new Map([
  [Headers, (h) => entriesMap(headerList(h))],
  [URLSearchParams, (p) => entriesMap(p)],
  [FormData, (f) => entriesMap(f)],
  [URL, (u) => ({ href: u.href })],
]);

export function installWebApis(g) {
  for (const [name, cls] of Object.entries(CLASSES)) {
    // The bundler turns `class X` into `var X = class _X`, which would rename X.name.
    Object.defineProperty(cls, 'name', { value: name, configurable: true });
    Object.defineProperty(cls.prototype, Symbol.toStringTag, { value: name, configurable: true });
    // DOMException is an Error: it clones and prints as one, not as a platform object.
    if (cls !== DOMException) platformPrototypes.set(cls.prototype, { name, inspect: INSPECT.get(cls) });
  }
  for (const name of PLATFORM_GLOBALS) {
    Object.defineProperty(g, name, { value: GLOBALS[name], writable: true, enumerable: false, configurable: true });
  }
  Object.defineProperty(g, 'self', { value: g, writable: true, enumerable: false, configurable: true });
}

// Deliberately no warm-up of the request path here. The snapshot keeps code compiled at
// snapshot time, and with this V8 (isolated-vm 5 on Node 20) a function that ran then
// can misresolve variables on a path first taken after deserialization: a closure it
// creates later throws "n is not defined" (seen with Headers.set). So at snapshot time
// the shim only defines things; every request path compiles lazily in the isolate.

export { makeRequest, abortRequest, bodyOf, responseParts, bodyReader, fedStream };
