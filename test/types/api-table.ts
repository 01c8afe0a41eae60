import { WORKERS_API, type WorkersApiName } from './workers-api.js';

// The README's "Supported Workers APIs" table, generated (`npm run gen:api-table`) from what
// the tests cover: each row names the workers-types types it stands for (their missing
// members come from the gap list in workers-api.ts, which test/unit/workers-types.test.ts
// measures in a real isolate), the globals of the global scope that are its business, what
// is there in words, behaviour still missing that no member name says, and the test files
// that prove the row. test/unit/api-table.test.ts fails when the README differs from what
// this renders, when a type or global gap belongs to no row (or two), or when a named test
// file does not exist. So the state column cannot claim more than the gap list allows.

export interface ApiRow {
  api: string;
  /** Keys of WORKERS_API this row stands for; their listed gaps are its missing members. */
  types: WorkersApiName[];
  /** Members of the global scope (WORKERS_API.globalThis) that are missing and belong here. */
  globals: string[];
  /** What is there, in words. */
  there: string;
  /** Missing behaviour that no member name says (encodings, options, limits). */
  also?: string;
  /** The whole thing is absent. */
  absent?: true;
  /** Test files that prove the row (paths from the repository root). */
  tests: string[];
}

export const API_ROWS: ApiRow[] = [
  {
    api: "Handlers (`ExportedHandler`)",
    types: ["ExportedHandler", "ExecutionContext"],
    globals: ["addEventListener", "removeEventListener", "dispatchEvent", "onmessage"],
    there: "`export default { fetch(request, env, ctx) }` or `export default class extends WorkerEntrypoint { fetch(request) }`; `ctx.waitUntil`; `ctx.passThroughOnException` (accepted; an exception is a 500, there is no origin to pass to); `env` vars, secrets, `ai` and actor bindings",
    also: "service-worker syntax; `import` at run time other than `cloudflare:workers`, `node:*` and the modules of a module map (`edge deploy` bundles with esbuild first, unless `no_bundle`)",
    tests: ["test/unit/shim/fetch.test.ts", "test/agent/workers-module.test.ts", "test/agent/concurrency.test.ts"],
  },
  {
    api: "Request",
    types: ["Request"],
    globals: [],
    there: "Fetch-standard construction and validation, `clone()`, incoming headers immutable, `CF-Connecting-IP` (the connection's address; a client's own `CF-Connecting-IP`/`X-Forwarded-*` count only from a `--trusted-proxy`), `url` WHATWG-normalized and the URL routes match on; a request body that stalls 10 s or averages under 4 KiB/s gets 408, headers must arrive within 5 s; `signal` aborted (an `AbortError` DOMException) when the client disconnects before the response is done, cancelling the `fetch()` calls made with it; `cf`: `httpProtocol` (`\"HTTP/1.1\"`), `colo` (the agent's region), and `country`, `continent`, `city`, `region`, `regionCode`, `postalCode`, `metroCode`, `latitude`, `longitude`, `timezone` when a `--trusted-proxy` sent Cloudflare's visitor-location headers (`CF-IPCountry`, `CF-Region`, ...; from anyone else those headers are dropped)",
    also: "`cf.tlsVersion`/`tlsCipher` (TLS ends before the agent), `cf.asn`, bot management",
    tests: ["test/unit/shim/fetch-api.test.ts", "test/agent/runtime-globals.test.ts", "test/unit/trusted-proxy.test.ts"],
  },
  {
    api: "Response",
    types: ["Response", "Response (static)"],
    globals: [],
    there: "construction and validation, `Response.json`, `Response.redirect`, `Response.error`, `clone()`, `webSocket` (status 101)",
    tests: ["test/unit/shim/fetch-api.test.ts", "test/unit/shim/fetch.test.ts"],
  },
  {
    api: "Body (Request, Response)",
    types: [],
    globals: [],
    there: "`body`, `bodyUsed` (read-once), `text`, `json`, `arrayBuffer`, `bytes`, `blob`, `formData`; string, BufferSource, URLSearchParams, Blob, FormData, ReadableStream bodies; streamed both ways",
    tests: ["test/unit/shim/text-bodies.test.ts", "test/unit/shim/streams.test.ts", "test/unit/shim/fetch-api.test.ts"],
  },
  {
    api: "Headers",
    types: ["Headers"],
    globals: [],
    there: "case-insensitive, combining `append`, `getSetCookie`, `getAll('set-cookie')`, sorted iteration",
    tests: ["test/unit/shim/fetch-api.test.ts"],
  },
  {
    api: "URL, URLSearchParams",
    types: ["URL", "URL (static)", "URLSearchParams"],
    globals: ["URLPattern"],
    there: "WHATWG parsing (by the host's parser), setters, `canParse`, `parse`, live `searchParams`",
    tests: ["test/unit/shim/url.test.ts"],
  },
  {
    api: "FormData, Blob, File",
    types: ["FormData", "Blob", "File"],
    globals: [],
    there: "",
    tests: ["test/unit/shim/fetch-api.test.ts", "test/unit/shim/globals.test.ts"],
  },
  {
    api: "fetch (subrequests)",
    types: [],
    globals: [],
    there: "through the host, counted against `limits.subrequests`, redirects (20 at most), AbortSignal; bodies streamed both ways; only to destinations the egress policy allows: public addresses, never loopback, private, link-local, carrier-grade NAT or cluster ranges, nor cluster names (`*.svc`, `*.cluster.local`, single-label), checked on the resolved address of every hop (`--egress-allow` and the admin's policy open more)",
    also: "`cf` options; a 307/308 redirect with a streamed body",
    tests: ["test/unit/shim/fetch.test.ts", "test/unit/egress.test.ts"],
  },
  {
    api: "Streams",
    types: ["ReadableStream", "ReadableStream (static)", "ReadableStreamDefaultReader", "WritableStream", "WritableStreamDefaultWriter", "TransformStream"],
    globals: ["ReadableStreamBYOBReader"],
    there: "ReadableStream (default reader, `tee`, `pipeTo`/`pipeThrough`, async iteration, `from`), WritableStream, TransformStream, IdentityTransformStream, FixedLengthStream, TextEncoderStream, TextDecoderStream, `CompressionStream`/`DecompressionStream` (`gzip`, `deflate`, `deflate-raw`; inflated in the isolate, within the worker's memory and CPU limits), queuing strategies; a response stream that fails before its first byte (within 250 ms) is a 500, after it the chunked body is cut off (no final chunk)",
    tests: ["test/unit/shim/streams.test.ts", "test/agent/runtime-globals.test.ts"],
  },
  {
    api: "Encoding",
    types: ["TextEncoder", "TextDecoder"],
    globals: [],
    there: "TextEncoder/TextDecoder (UTF-8, `fatal`, `ignoreBOM`, `stream`), `atob`/`btoa`",
    also: "encodings other than UTF-8",
    tests: ["test/unit/shim/globals.test.ts"],
  },
  {
    api: "Events, abort",
    types: ["Event", "EventTarget", "AbortController", "AbortSignal", "AbortSignal (static)"],
    globals: [],
    there: "Event, EventTarget (`once`, `signal`, `capture`, `handleEvent` objects, `stopImmediatePropagation`), CustomEvent, DOMException; AbortController, AbortSignal (`abort`, `timeout`, `any`)",
    tests: ["test/unit/shim/globals.test.ts"],
  },
  {
    api: "crypto",
    types: ["Crypto", "SubtleCrypto", "CryptoKey", "DigestStream"],
    globals: [],
    there: "`getRandomValues`, `randomUUID`; `subtle` `importKey`/`exportKey` (raw, jwk, spki, pkcs8), `sign`/`verify` (HMAC, ECDSA P-256/P-384/P-521, RSASSA-PKCS1-v1_5, RSA-PSS, Ed25519 and Workers' `NODE-ED25519`), `encrypt`/`decrypt` (AES-GCM, AES-CBC, AES-CTR, RSA-OAEP), `wrapKey`/`unwrapKey` (and AES-KW), `deriveBits`/`deriveKey` (PBKDF2, HKDF, ECDH, X25519), `generateKey`, `digest` (SHA-1/256/384/512, MD5), `timingSafeEqual`; `CryptoKey`; `crypto.DigestStream` (hashed on the host as it is written). Keys stay on the host (Node's webcrypto, run on its threadpool, off the event loop): a `CryptoKey` is a handle into its isolate's own table, 10,000 keys per isolate; 2 operations per isolate at once and the threadpool's size less one for all isolates (threadpool time is not counted in `cpuMsPerRequest`); inputs up to 32 MiB per call (`DigestStream` for more); PBKDF2 up to 100,000 iterations, as workerd",
    tests: ["test/unit/shim/webcrypto.test.ts", "test/unit/shim/globals.test.ts", "test/agent/public-clients.test.ts"],
  },
  {
    api: "WebSockets",
    types: ["WebSocket", "WebSocketPair", "MessageEvent", "CloseEvent"],
    globals: [],
    there: "accepting upgrades: `WebSocketPair`, `accept()`, `send` (text, ArrayBuffer, views), `close(code, reason)`, `readyState`, `message`/`close`/`error` events and `on*` handlers, `MessageEvent`/`CloseEvent`/`ErrorEvent`, `new Response(null, { status: 101, webSocket })`; messages up to 1 MiB (`--max-ws-message-kb`); a client that does not read is cut off once 8 MiB wait for it (1008 to it, a 1006 close event to the worker), and an isolate's sockets hold at most 32 MiB (and memoryMiB/4) for slow clients, past which `send` throws; `serializeAttachment`/`deserializeAttachment` (structured clone, 16 KiB), `READY_STATE_*`; an upgrade of any method reaches the worker",
    also: "outbound `new WebSocket(url)` / `fetch` upgrades; compression",
    tests: ["test/unit/shim/websocket.test.ts", "test/agent/websocket.test.ts"],
  },
  {
    api: "WebAssembly",
    types: [],
    globals: [],
    there: "`WebAssembly.Module/Instance/Memory`, `compile`/`instantiate` (compiled synchronously); every memory's maximum counts against `memoryMiB` (one without a maximum gets what is left)",
    also: "`compileStreaming`/`instantiateStreaming`, memory64",
    tests: ["test/security/isolate-limits.test.ts", "test/agent/sqlite.test.ts"],
  },
  {
    api: "HTMLRewriter",
    types: ["HTMLRewriter", "Element", "EndTag", "Comment", "Text", "Doctype", "DocumentEnd"],
    globals: [],
    there: "`new HTMLRewriter().on(selector, { element, comments, text }).onDocument({ doctype, comments, text, end }).transform(response)`, streamed (synchronous handlers read nothing ahead); content as a string, `Response` or `ReadableStream`, `{ html }`; async handlers; a bad selector is a `TypeError` at `.on()`; `Element.canHaveContent`; lol-html (html-rewriter-wasm, compiled once per process) runs in the worker's isolate, its memory within half the worker's `memoryMiB`, its CPU the worker's ([docs/runtime-globals.md](docs/runtime-globals.md))",
    also: "`Element.selfClosing`, `enableEsiTags`; not in SQLite-backed actors (sql.js takes the whole wasm budget)",
    tests: ["test/agent/html-rewriter.test.ts", "test/unit/html-rewriter-module.test.ts", "test/unit/workers-types.test.ts"],
  },
  {
    api: "Other globals",
    types: [],
    globals: ["caches", "EventSource", "MessageChannel", "reportError", "Cloudflare", "origin"],
    there: "`structuredClone` (Date, RegExp, Map, Set, ArrayBuffer, typed arrays and DataView sharing their buffer, Blob/File, Error types with `cause`, BigInt, boxed primitives, sparse arrays, cycles), `setTimeout`/`setInterval` (1,000 pending per isolate)/`queueMicrotask`, `scheduler.wait(ms, { signal })` (within the same 1,000; one refused rejects), `console` (to the agent's log, tagged with the worker), `performance.now`, `navigator.userAgent` (`\"Cloudflare-Workers\"`), `navigator.hardwareConcurrency` (1)",
    also: "`connect()` (`cloudflare:sockets`)",
    tests: ["test/unit/shim/globals.test.ts", "test/agent/runtime-globals.test.ts"],
  },
  {
    api: "Workers AI (`ai` binding)",
    types: ["Ai"],
    globals: [],
    there: "`env.AI.run(model, inputs)` for every model the binding may call (its `model` and `models`, from the cluster's EdgeModel catalogue; `@cf/...` and `@hf/...` ids), by the catalogue's task type: text generation (`messages` \\| `prompt`, `stream` as Cloudflare-style SSE, `max_tokens`, `temperature`, `top_p`, `seed`, `stop`, ...; `tools` in the OpenAI or legacy shape, answered as `tool_calls` in Workers AI's shape), text embeddings (`{ text: string \\| string[] }` -> `{ shape: [n, dim], data }` via `/v1/embeddings`), text to image (`{ prompt, width, height, num_steps, guidance, seed, negative_prompt }` -> a ReadableStream of the PNG via `/v1/images/generations`); Workers AI's 5006/5007 error wording; counted as a subrequest; the server URL is never visible to the worker; under `edge dev` stand-in servers answer every task (a real PNG, the model's vector dimension)",
    also: "speech recognition, translation, summarization, image-to-text; `tools` with `stream: true`; `functions` (embedded function calling), `response_format`, `lora`, `raw`; img2img / inpainting (`image`, `mask`); a binding calling every catalogue model without listing it",
    tests: ["test/unit/shim/ai.test.ts", "test/agent/ai-tasks.test.ts", "test/unit/ai-catalogue.test.ts"],
  },
  {
    api: "Durable Objects: namespace, id, stub",
    types: ["DurableObjectNamespace", "DurableObjectId", "DurableObjectStub"],
    globals: [],
    there: "`env.NS.idFromName/newUniqueId/idFromString/get/getByName`, `stub.fetch()` (request and response bodies streamed both ways; cancelling reaches the actor's stream; a streamed response outlives the actor's wall limit), `stub.id`, `stub.name`, `id.toString/equals/name`",
    also: "`locationHint` per call (it is per class, in the CR)",
    tests: ["test/unit/shim/durable.test.ts", "test/integration/actors.test.ts", "test/agent/actor-streaming.test.ts"],
  },
  {
    api: "Durable Objects: class and `state`",
    types: ["DurableObject", "DurableObjectState"],
    globals: [],
    there: "classes with `constructor(state, env)`, `fetch`, `alarm()`; `state.id`, `state.storage`, `state.blockConcurrencyWhile` (30 s), `state.waitUntil`; WebSockets accepted with `accept()` and broadcast; WebSocket hibernation: `state.acceptWebSocket(ws, tags)`, `getWebSockets(tag)`, `getTags`, `webSocketMessage`/`webSocketClose`/`webSocketError` handlers, tags and attachments kept on the agent while the actor is evicted (10 s idle) and woken by a message, `setWebSocketAutoResponse` (`WebSocketRequestResponsePair`) answered by the agent without waking it, `getWebSocketAutoResponse`, `getWebSocketAutoResponseTimestamp`, `set/getHibernatableWebSocketEventTimeout` (stored; the wall limit bounds an event); a hibernated socket whose client is on another agent moves to the actor's next owner when its owner dies or drains ([docs/actors.md](docs/actors.md#websocket-hibernation-actorshibernationts-socketshibernationts-shimhibernationjs))",
    tests: ["test/unit/shim/durable.test.ts", "test/agent/hibernation.test.ts", "test/agent/hibernation-migration.test.ts"],
  },
  {
    api: "Durable Objects: `state.storage`",
    types: ["DurableObjectStorage", "DurableObjectTransaction", "SqlStorage", "SqlStorageCursor", "SyncKvStorage"],
    globals: [],
    there: "`get`/`put`/`delete` (single and batched), `list` (prefix, start, startAfter, end, limit, reverse), `transaction` (+ `rollback`), `deleteAll`, `getAlarm`/`setAlarm`/`deleteAlarm`, `sync`; structured-clone values; on a SQLite-backed class (DurableActor `spec.storage.backend: sqlite`) also `sql` (`exec(query, ...bindings)`, `databaseSize`; its cursor `toArray`, `one`, `raw`, iteration, `next`, `columnNames`, `rowsRead`, `rowsWritten`), `kv` (`get`/`put`/`delete`/`list`, synchronous), `transactionSync`, the async API and alarms on the same database; SQLite (sql.js, WebAssembly) runs in the actor's isolate under its limits, every write in the request's one fenced commit ([`docs/actors.md`](docs/actors.md#sqlite-storage-specstoragebackend-sqlite)); on a KV-backed class `sql`, `kv` and `transactionSync` throw as workerd's do",
    also: "point-in-time recovery; `sql.ingest`; cursor computed eagerly, `rowsRead` counts rows returned",
    tests: ["test/unit/shim/durable.test.ts", "test/agent/sqlite.test.ts", "test/integration/sqlite-faults.test.ts", "test/integration/actors-semantics.test.ts"],
  },
  {
    api: "`cloudflare:workers`",
    types: ["cloudflare:workers"],
    globals: [],
    there: "`DurableObject` (`this.ctx`, `this.env`), `WorkerEntrypoint` (default and named exports; one instance per event), `RpcTarget`, `env` (readable inside handlers; empty at the top level), `waitUntil`, `exports` (empty); a derived class that never calls `super()` fails with V8's own ReferenceError, a class with no base keeps working. The Agents SDK (`agents`) runs unmodified on it: state sync, `this.sql`, `this.schedule` (alarms keep the Agent's name), `@callable` from `AgentClient` ([examples/agents](examples/agents))",
    also: "`cloudflare:email` sending (its `EmailMessage` can be made: there is no send_email binding), other `cloudflare:*` modules (refused at bundle time, naming the module); loopback bindings in `exports` / `ctx.exports` (so the Agents SDK's sub-agents)",
    tests: ["test/agent/workers-module.test.ts", "test/agent/agents-sdk.test.ts", "test/integration/agents-sdk-faults.test.ts"],
  },
  {
    api: "JS RPC",
    types: ["JS RPC on stubs"],
    globals: [],
    there: "`await stub.method(...args)` on Durable Object stubs and service bindings, through the actor's input and output gates and across agents; structured-cloned arguments and results (Date, RegExp, Map, Set, BigInt, typed arrays, Errors, cycles), 32 MiB per message; `RpcTarget`s and functions returned by reference (released by `[Symbol.dispose]()`, at most 1,024 per actor) and passed as arguments for the call's duration (callee on the same agent); pipelining in one round trip (`stub.getCounter().increment()`); errors rethrown with name and message; Workers' wording for a missing method and unserializable values ([docs/rpc.md](docs/rpc.md))",
    also: "stubs passed on to a third party; `ReadableStream`/`Request`/`Response` arguments; callbacks to a caller on another agent",
    tests: ["test/agent/rpc.test.ts", "test/integration/actors-rpc.test.ts", "test/security/rpc.test.ts"],
  },
  {
    api: "Service bindings (`Fetcher`)",
    types: ["Fetcher"],
    globals: [],
    there: "`spec.bindings.services` / `edge deploy --service X=WORKER[:ENTRYPOINT]`: `env.X.fetch()` and RPC to another EdgeWorker of the namespace on the same agent (its default `WorkerEntrypoint`, or `entrypoint`), chains, depth bounded at 8 hops with a catchable error",
    also: "targets not placed on the caller's agent",
    tests: ["test/agent/service-bindings.test.ts"],
  },
  {
    api: "Worker Loader (Dynamic Workers)",
    types: ["WorkerLoader", "WorkerStub"],
    globals: [],
    there: "`spec.bindings.workerLoaders` / wrangler `worker_loaders`: `env.LOADER.load(code)` and `get(id, callback)` run code handed over at run time in a pooled isolate on the caller's agent; `getEntrypoint(name?)` with `fetch()` and JS RPC; `WorkerCode` `compatibilityDate`, `compatibilityFlags`, `mainModule`, `modules` (one plain module, or a module map), `env` (plain values; the caller's own bindings, `RpcTarget`s and functions as capabilities), `globalOutbound` (`null`, or a service binding that receives every `fetch()`), `limits` (capped by the caller's); contained like a deployed worker, errors rethrown with name and message, console lines in the caller's log tagged `[dynamic <id>]`; `get()`'s kept warm in an LRU per agent ([docs/dynamic-workers.md](docs/dynamic-workers.md))",
    also: "`getEntrypoint` options (`props`, `limits`); `tails`; functions and `RpcTarget`s nested in `env` values; Python modules",
    tests: ["test/agent/worker-loader.test.ts", "test/unit/worker-loader.test.ts"],
  },
  {
    api: "Node built-ins (`nodejs_compat`)",
    types: [],
    globals: [],
    there: "with `spec.compatibilityFlags: [nodejs_compat]` / `edge deploy --compatibility-flag nodejs_compat` (bare `buffer`, `events`, ... resolve to them, as wrangler does): `node:buffer`, `node:events`, `node:util` (+ `util/types`), `node:stream`, `node:string_decoder`, `node:path` (posix), `node:url`, `node:stream/promises` from the npm polyfills (buffer, events, util, readable-stream, string_decoder, path-browserify, url; MIT); `node:async_hooks` (`AsyncLocalStorage` across `await`, `then`/`catch`/`finally`, `queueMicrotask`, timers and `nextTick`; `AsyncResource`); `node:process` (`env` from the vars, `nextTick`, versions; `exit()` throws); `node:crypto` (`createHash` md5/sha1/sha256/sha384/sha512 up to 64 MiB per hash, `createHmac`, `randomBytes`, `randomInt`, `randomUUID`, `getRandomValues`, `timingSafeEqual`, `webcrypto`); `node:diagnostics_channel` (`channel`, `subscribe`, `tracingChannel`) and `node:os` (values of no machine), which the Agents SDK imports; the `Buffer`, `process` and `global` globals",
    also: "`node:fs`, `net`, `http`, `zlib`, `assert`, ... (refused at bundle and load time, by name); Node `crypto` ciphers, keys and sign/verify; `await` of a native promise keeps the AsyncLocalStorage context only in code bundled by `edge deploy` (it lowers async functions)",
    tests: ["test/agent/nodejs-compat.test.ts", "test/unit/nodejs-compat-bundle-check.test.ts"],
  },
  {
    api: "Multi-module workers",
    types: [],
    globals: [],
    there: "a module map as the worker's source (`common/module-map.ts`: `encodeModuleMap`; wrangler `no_bundle`/`find_additional_modules`/`base_dir` and `edge deploy --no-bundle`): `js` (ES), `cjs` (CommonJS, `module.exports` as default, `require()` inside the map and of `node:*` with nodejs_compat), `text`, `data` (ArrayBuffer), `json`, `wasm` (`WebAssembly.Module`); relative imports, no escape from the root; at most 1,024 modules; the operator's bundle check resolves every static import",
    also: "named exports of CommonJS modules (workerd's `namedExports`); dynamic `import()`; `require()` of an ES module",
    tests: ["test/agent/module-map.test.ts", "test/agent/deploy-no-bundle.test.ts", "test/unit/module-map.test.ts", "test/unit/module-map-bundle-check.test.ts"],
  },
  {
    api: "Other bindings",
    types: [],
    globals: [],
    there: "",
    also: "KV, R2, D1, Queues, Vectorize, Hyperdrive, Workflows, Analytics Engine, Browser, ... (there is no binding kind for them)",
    absent: true,
    tests: [],
  },
];

export const API_TABLE_BEGIN = '<!-- api-table:begin (generated by npm run gen:api-table from test/types/api-table.ts) -->';
export const API_TABLE_END = '<!-- api-table:end -->';

const code = (s: string) => `\`${s}\``;

/** The missing members of a row: its types' gaps from the gap list, then its globals. */
export function missingMembers(row: ApiRow): string[] {
  const out: string[] = [];
  for (const t of row.types) {
    const gaps = WORKERS_API[t] as readonly string[];
    if (gaps.includes('*')) out.push(`${code(t)} (all)`);
    else if (gaps.length) out.push(`${code(t)}: ${gaps.map(code).join(', ')}`);
  }
  if (row.globals.length) out.push(`globals ${row.globals.map(code).join(', ')}`);
  return out;
}

export function rowState(row: ApiRow): 'there' | 'partial' | 'not there' {
  if (row.absent) return 'not there';
  return missingMembers(row).length === 0 && !row.also ? 'there' : 'partial';
}

const cell = (s: string) => s.replace(/\n/g, ' ');

/** The table as it stands in the README, between the markers. */
export function renderApiTable(): string {
  const lines = ['| API | state | there | missing | tested by |', '|---|---|---|---|---|'];
  for (const row of API_ROWS) {
    const missing = [...missingMembers(row), ...(row.also ? [row.also] : [])].join('; ');
    const tests = row.tests.map((t) => `[${t.replace(/^test\//, '').replace(/\.test\.ts$/, '')}](${t})`).join(', ');
    lines.push(`| ${[row.api, rowState(row), row.there, missing, tests].map(cell).join(' | ')} |`);
  }
  return `${API_TABLE_BEGIN}\n${lines.join('\n')}\n${API_TABLE_END}`;
}
