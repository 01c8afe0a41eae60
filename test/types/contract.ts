// The type half of the Workers API check (see ./workers-api.ts): compiled by
// `tsc -p test/types` with @cloudflare/workers-types as the global types and the shim's
// JavaScript typed by TypeScript's own inference (allowJs), so what is checked is the shim's
// code, not a declaration written beside it.
import { type WORKERS_API } from './workers-api.js';
import { type Request as OurRequest } from '../../node-agent/shim/web/request.js';
import { type Response as OurResponse } from '../../node-agent/shim/web/response.js';
import { type Headers as OurHeaders } from '../../node-agent/shim/web/headers.js';
import { type URL as OurURL, type URLSearchParams as OurURLSearchParams } from '../../node-agent/shim/web/url.js';
import { type FormData as OurFormData } from '../../node-agent/shim/web/form-data.js';
import { type Blob as OurBlob, type File as OurFile } from '../../node-agent/shim/web/blob.js';
import type * as streams from '../../node-agent/shim/web/streams.js';
import { type TextDecoder as OurTextDecoder, type TextEncoder as OurTextEncoder } from '../../node-agent/shim/web/encoding.js';
import { type Event as OurEvent, type EventTarget as OurEventTarget } from '../../node-agent/shim/web/event.js';
import { type AbortController as OurAbortController, type AbortSignal as OurAbortSignal } from '../../node-agent/shim/web/abort.js';
import { type Crypto as OurCrypto, type CryptoKey as OurCryptoKey, type DigestStream as OurDigestStream, type SubtleCrypto as OurSubtleCrypto } from '../../node-agent/shim/web/crypto.js';
import type * as ws from '../../node-agent/shim/web/websocket.js';
import { type HTMLRewriter as OurHTMLRewriter } from '../../node-agent/shim/html-rewriter.js';
import type * as lol from 'html-rewriter-wasm';
import { type actorNamespace } from '../../node-agent/shim/durable.js';
import { type aiBinding } from '../../node-agent/shim/ai.js';

type Api = typeof WORKERS_API;
/** The listed gaps of an API, string keys only (symbol members are checked at run time). */
type Listed<K extends keyof Api> = Exclude<Api[K][number], `[${string}` | '*'>;
/** The members of the workers-types type the shim's type does not have. */
type Missing<Theirs, Ours> = Extract<Exclude<keyof Theirs, keyof Ours>, string>;
type Report<M, L> = { missing_but_not_listed: Exclude<M, L>; listed_but_present: Exclude<L, M> };
/** true when the shim misses exactly the listed members; otherwise the difference, in the error. */
type Exactly<M, L> = [M] extends [L] ? ([L] extends [M] ? true : Report<M, L>) : Report<M, L>;
/**
 * The members the shim has must fit where workers-types' are expected (a worker's call
 * compiles and gets what its types say), and the gaps must be exactly the listed ones.
 */
function check<K extends keyof Api>() {
  return <Theirs, Ours extends Loose<Omit<Theirs, Listed<K>>>>(verdict: Verdict<Theirs, Ours, Listed<K>>) => verdict;
}
type Verdict<Theirs, Ours, L> = IsAny<Ours> extends true ? 'inferred as any: nothing checked' : Exactly<Missing<Theirs, Ours>, L>;
/** Inference gives `any` where it gives up (Object.create, say), which would pass every check. */
type IsAny<T> = 0 extends 1 & T ? true : false;

// Members that the shim defines on a class's prototype from a shared helper, which
// inference cannot see: their presence is what the run-time half proves.
type BodyMembers = 'body' | 'bodyUsed' | 'arrayBuffer' | 'bytes' | 'text' | 'json' | 'formData' | 'blob';
type PairIteration = 'forEach' | 'entries' | 'keys' | 'values' | typeof Symbol.iterator;
type WithBody<Ours, Theirs> = Ours & Pick<Theirs, BodyMembers & keyof Theirs>;

/**
 * What inference can be trusted with: a member's presence, whether it is a method, and
 * whether a method workers-types declares async returns a promise. Parameters in
 * JavaScript carry no types (the shim checks its arguments at run time, as workerd does),
 * and what a getter or a sync method returns is inferred from private fields and helpers,
 * too loosely to compare with workers-types' declarations (the run-time half checks which
 * members are functions on the real objects).
 */
type Loose<T> = {
  [K in keyof T]: T[K] extends (...args: never[]) => infer R
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    ? (...args: any[]) => ([R] extends [PromiseLike<unknown>] ? PromiseLike<unknown> : unknown)
    : unknown;
};

check<'Request'>()<Request, WithBody<OurRequest, Request>>(true);
check<'Response'>()<Response, WithBody<OurResponse, Response>>(true);
check<'Response (static)'>()<typeof Response, typeof OurResponse>(true);
check<'Headers'>()<Headers, OurHeaders>(true);
check<'URL'>()<URL, OurURL>(true);
check<'URL (static)'>()<typeof URL, typeof OurURL>(true);
check<'URLSearchParams'>()<URLSearchParams, OurURLSearchParams & Pick<URLSearchParams, PairIteration>>(true);
check<'FormData'>()<FormData, OurFormData & Pick<FormData, PairIteration>>(true);
check<'Blob'>()<Blob, OurBlob>(true);
check<'File'>()<File, OurFile>(true);
check<'ReadableStream'>()<ReadableStream, streams.ReadableStream>(true);
check<'ReadableStream (static)'>()<typeof ReadableStream, typeof streams.ReadableStream>(true);
check<'ReadableStreamDefaultReader'>()<ReadableStreamDefaultReader, streams.ReadableStreamDefaultReader>(true);
check<'WritableStream'>()<WritableStream, streams.WritableStream>(true);
check<'WritableStreamDefaultWriter'>()<WritableStreamDefaultWriter, streams.WritableStreamDefaultWriter>(true);
check<'TransformStream'>()<TransformStream, streams.TransformStream>(true);
check<'TextEncoder'>()<TextEncoder, OurTextEncoder>(true);
check<'TextDecoder'>()<TextDecoder, OurTextDecoder>(true);
check<'Event'>()<Event, OurEvent>(true);
check<'EventTarget'>()<EventTarget, OurEventTarget>(true);
check<'AbortController'>()<AbortController, OurAbortController>(true);
check<'AbortSignal'>()<AbortSignal, OurAbortSignal>(true);
check<'AbortSignal (static)'>()<typeof AbortSignal, typeof OurAbortSignal>(true);
// The crypto global is made with Object.create(Crypto.prototype) (inferred as any), with
// subtle and DigestStream as its own properties.
check<'Crypto'>()<Crypto, OurCrypto & { subtle: OurSubtleCrypto; DigestStream: typeof OurDigestStream }>(true);
check<'SubtleCrypto'>()<SubtleCrypto, OurSubtleCrypto>(true);
check<'CryptoKey'>()<CryptoKey, OurCryptoKey>(true);
check<'DigestStream'>()<DigestStream, OurDigestStream>(true);
check<'WebSocket'>()<WebSocket, ws.WebSocket>(true);
check<'MessageEvent'>()<MessageEvent, ws.MessageEvent>(true);
check<'CloseEvent'>()<CloseEvent, ws.CloseEvent>(true);
check<'HTMLRewriter'>()<HTMLRewriter, OurHTMLRewriter>(true);
// What handlers are handed: html-rewriter-wasm's classes, as its declarations type them.
check<'Element'>()<Element, lol.Element>(true);
check<'EndTag'>()<EndTag, lol.EndTag>(true);
check<'Comment'>()<Comment, lol.Comment>(true);
check<'Text'>()<Text, lol.TextChunk>(true);
check<'Doctype'>()<Doctype, lol.Doctype>(true);
check<'DocumentEnd'>()<DocumentEnd, lol.DocumentEnd>(true);
check<'Ai'>()<Ai, ReturnType<typeof aiBinding>>(true);
check<'DurableObjectNamespace'>()<DurableObjectNamespace, ReturnType<typeof actorNamespace>>(true);

