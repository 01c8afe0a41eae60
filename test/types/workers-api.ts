// The Workers API this project claims, measured against @cloudflare/workers-types: for each
// type there, the members the shim does NOT have (everything else it has). One list, read
// by both halves of the check, so neither can drift from it or from the README's API table:
//   - test/types/contract.ts (tsc -p test/types, in `npm run typecheck`): the shim's classes,
//     as TypeScript infers them from its JavaScript, miss exactly these members, and every
//     member they have is assignable to the workers-types member of that name;
//   - test/unit/workers-types.test.ts: in a real isolate, the objects a worker is handed
//     (globals, ctx, env bindings, a Durable Object's state and storage) have every member of
//     the workers-types type except exactly these.
// Adding a member to the shim makes both fail until its name is taken off here: that is the
// point. '*' means the whole object is not there. Symbol-keyed members are written
// '[Symbol.iterator]'.

export const WORKERS_API = {
  // ---- Fetch ----
  Request: ['fetcher', 'cache'],
  Response: ['cf'],
  'Response (static)': [],
  Headers: [],
  URL: [],
  'URL (static)': ['createObjectURL', 'revokeObjectURL'],
  URLSearchParams: [],
  FormData: [],
  Blob: [],
  File: [],
  // ---- Streams and encoding ----
  ReadableStream: [],
  'ReadableStream (static)': [],
  ReadableStreamDefaultReader: [],
  WritableStream: [],
  WritableStreamDefaultWriter: [],
  TransformStream: [],
  TextEncoder: [],
  TextDecoder: [],
  // ---- Events, abort, crypto ----
  Event: [],
  EventTarget: [],
  AbortController: [],
  AbortSignal: [],
  'AbortSignal (static)': [],
  Crypto: [],
  SubtleCrypto: [],
  CryptoKey: [],
  DigestStream: [],
  // ---- WebSockets ----
  WebSocket: [],
  WebSocketPair: [],
  MessageEvent: ['origin', 'lastEventId', 'source', 'ports'],
  CloseEvent: [],
  // ---- HTMLRewriter (lol-html in the isolate: node-agent/shim/html-rewriter.js) ----
  HTMLRewriter: [],
  // What handlers are handed (html-rewriter-wasm's classes): measured on live tokens.
  Element: [],
  EndTag: [],
  Comment: [],
  Text: [],
  Doctype: [],
  DocumentEnd: [],
  // ---- Handlers and bindings ----
  // The handlers the agent calls (HANDLERS_CALLED in test/unit/workers-types.test.ts).
  ExportedHandler: ['scheduled', 'queue', 'tail', 'trace', 'tailStream', 'email', 'connect', 'test'],
  DurableObject: ['connect'],
  ExecutionContext: ['props', 'exports', 'cache', 'tracing'],
  // run(): the catalogue's task types (text generation with tools, text embeddings, text to image).
  Ai: ['aiGatewayLogId', 'gateway', 'aiSearch', 'autorag', 'models', 'toMarkdown'],
  DurableObjectNamespace: ['jurisdiction'],
  DurableObjectId: ['jurisdiction'],
  DurableObjectStub: ['connect'],
  DurableObjectState: [
    'props', 'exports', 'container', 'facets', 'abort',
  ],
  DurableObjectStorage: [
    // SQLite storage (issue 14 item 3)
    // point-in-time recovery (see docs/actors.md, "SQLite storage")
    'getCurrentBookmark', 'getBookmarkForTime', 'onNextSessionRestoreBookmark',
  ],
  DurableObjectTransaction: [],
  // ---- Being added (issue 14): '*' until each lands. Each is measured on what the test
  // can reach (ACTOR_REACH / WORKER_REACH in test/unit/workers-types.test.ts): ----
  // storage.sql / storage.kv of the test's actor, SQLite-backed (issue 14 item 3).
  // prepare() (and its Statement) are deprecated in workerd: not there.
  SqlStorage: ['Statement'],
  SqlStorageCursor: [],
  SyncKvStorage: [],
  // env.SERVICE, a service binding of the test's DEFAULT_ENV.
  Fetcher: ['connect'],
  // env.LOADER, a Worker Loader binding of the test's DEFAULT_ENV, and what its load() returns (docs/dynamic-workers.md).
  WorkerLoader: [],
  WorkerStub: ['getDurableObjectClass'],
  // `import * as cw from 'cloudflare:workers'`, bundled by cli/deploy.ts's bundleWorker.
  'cloudflare:workers': ['withEnv', 'withExports', 'withEnvAndExports', 'RpcStub', 'WorkflowStep', 'WorkflowEntrypoint', 'cache', 'tracing'],
  // typeof stub.anyMethodName === 'function' on a Durable Object stub.
  'JS RPC on stubs': [],
  // ---- The global scope: workers-types' globals that are not there ----
  globalThis: [
    // service-worker syntax
    'addEventListener', 'removeEventListener', 'dispatchEvent', 'reportError', 'onmessage',
    'caches', 'Cloudflare', 'origin', 'URLPattern', 'EventSource', 'MessageChannel',
    'ReadableStreamBYOBReader',
  ],
} as const;

export type WorkersApiName = keyof typeof WORKERS_API;
