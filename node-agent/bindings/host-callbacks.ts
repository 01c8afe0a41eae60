import { createHash, randomBytes } from 'node:crypto';
import { describeIssues } from '../../common/errors.js';
import type { HostAsync, HostCallbacks, Settled, UrlRecord } from '../abi/bridge.js';
import { ActorCallIdSchema, ActorExceptionError, AiHandleSchema, AiRunArgsSchema, SubrequestIdSchema, SubrequestInitSchema } from '../abi/bridge.js';
import type { AiCalls } from './ai-binding.js';
import type { ActorCalls } from './actor-binding.js';
import type { ServiceCalls } from './service-binding.js';
import type { LoaderCalls } from './worker-loader.js';
import { invokeCallback } from './rpc-callbacks.js';
import { storageCall, type ActorStorage } from './actor-storage.js';
import { SocketLimitError } from '../sockets/isolate-sockets.js';
import { EdgeError } from '../../common/errors.js';
import { TimerLimitError, type HostTimers } from './host-timers.js';
import type { Subrequests } from './subrequests.js';
import type { HostCrypto } from './host-crypto.js';

// The host side of the narrow callbacks an isolate may use. Each worker isolate gets its
// own set, bound to the worker (for logs) and to the request in flight (for the
// subrequest budget). Inputs come from untrusted code: every one is checked here.

// MD5 only for node:crypto's createHash (nodejs_compat); crypto.subtle's own list refuses it.
const DIGESTS: Record<string, string> = { MD5: 'md5', 'SHA-1': 'sha1', 'SHA-256': 'sha256', 'SHA-384': 'sha384', 'SHA-512': 'sha512' };
const URL_SETTERS = new Set(['href', 'protocol', 'username', 'password', 'host', 'hostname', 'port', 'pathname', 'search', 'hash']);
const MAX_RANDOM_BYTES = 65_536;

const toArrayBuffer = (b: Uint8Array): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;

function urlRecord(u: URL): UrlRecord {
  return {
    href: u.href, origin: u.origin, protocol: u.protocol, username: u.username, password: u.password,
    host: u.host, hostname: u.hostname, port: u.port, pathname: u.pathname, search: u.search, hash: u.hash,
  };
}

export interface CallbackContext {
  workerName: string;
  /**
   * Hands the isolate the outcome of an asynchronous callback (`__edgeHostSettle`, see
   * HostAsync in bridge.ts); drops it when the isolate is gone.
   */
  settleHost(ticket: number, outcome: Settled<unknown>): void;
  /** console output of the worker. */
  onLog(level: string, message: string): void;
  /** Called before each subrequest; throws when the request's budget is spent. */
  countSubrequest(): void;
  /** The isolate's ai calls (env.<binding>.run), bound to the worker's ai bindings. */
  ai: AiCalls;
  /** The isolate's actor bindings (ids, stub.fetch through the agent's ActorRouter). */
  actors: ActorCalls;
  /** The isolate's service bindings (env.<binding>.fetch() and RPC to a worker of its namespace). */
  services: ServiceCalls;
  /** The isolate's Worker Loader bindings (env.<binding>.load() / get()). */
  loaders: LoaderCalls;
  /** Set for a dynamic worker whose globalOutbound is set: why its own fetch() is refused. */
  fetchRefused?: string;
  /** The isolate's fetch() subrequests, under its egress policy. */
  subrequests: Subrequests;
  /** An actor isolate's state.storage; null in a worker isolate. */
  storage: ActorStorage | null;
  /** The isolate's WebSockets (server ends bridged to the host): see isolate-sockets.ts. */
  sockets?: SocketCalls;
  /** The isolate's pending timers (setTimeout/setInterval), capped and cancelled with it. */
  timers: HostTimers;
  /** The isolate's crypto.subtle keys and operations (host-crypto.ts). */
  crypto: HostCrypto;
  /** An actor isolate's hibernatable WebSockets (actors/hibernation.ts); absent in a worker isolate. */
  hibernation?: HibernationCalls;
}

/**
 * The host side of the hibernation callback, bound to one actor: see HostCallbacks.hibernation.
 * Its arguments come from the isolate and are checked there.
 */
export type HibernationCalls = (op: string, a: unknown, b: unknown, c: unknown) => unknown;

/** What the socketSend/socketClose callbacks act on; checks its arguments itself. */
export interface SocketCalls {
  /** False: the socket no longer carries messages (see HostCallbacks.socketSend). */
  send(socket: number, data: unknown): boolean;
  close(socket: number, code: unknown, reason: unknown): void;
}

export function hostCallbacks(ctx: CallbackContext): Omit<HostCallbacks, 'bodyDemand' | 'htmlRewriter' | 'lib'> {
  // The host's half of HostAsync (bridge.ts): the work is already under way; its ticket
  // now, its outcome through ctx.settleHost once it settles.
  let lastTicket = 0;
  const hostAsync = <T>(work: Promise<T>): HostAsync<T> => {
    const ticket = ++lastTicket;
    work.then(
      (value): Settled<T> => ({ ok: true, value }),
      (err: unknown): Settled<T> => err instanceof ActorExceptionError
        ? { ok: false, error: err.exception.message, exception: err.exception }
        : { ok: false, error: err instanceof Error ? err.message : String(err) },
    ).then((outcome) => ctx.settleHost(ticket, outcome));
    return ticket;
  };
  return {
    log(level, message) {
      ctx.onLog(String(level), String(message));
    },
    randomBytes(n) {
      if (!Number.isInteger(n) || n < 0 || n > MAX_RANDOM_BYTES) {
        throw new RangeError(`getRandomValues: ${n} bytes requested; the limit is ${MAX_RANDOM_BYTES}`);
      }
      return toArrayBuffer(randomBytes(n));
    },
    parseURL(input, base) {
      try {
        return urlRecord(base === undefined ? new URL(String(input)) : new URL(String(input), String(base)));
      } catch {
        return null;
      }
    },
    setURL(href, property, value) {
      if (!URL_SETTERS.has(property)) throw new TypeError(`URL has no settable property ${String(property)}`);
      const u = new URL(String(href));
      (u as unknown as Record<string, string>)[property] = String(value);
      return urlRecord(u);
    },
    digest(algorithm, data) {
      const alg = DIGESTS[String(algorithm).toUpperCase()];
      if (!alg) throw new Error(`crypto.subtle.digest: unsupported algorithm ${String(algorithm)}`);
      if (!(data instanceof ArrayBuffer)) throw new TypeError('crypto.subtle.digest: data must be an ArrayBuffer');
      return toArrayBuffer(createHash(alg).update(new Uint8Array(data)).digest());
    },
    crypto(op, args) {
      return hostAsync(ctx.crypto.call(String(op), args));
    },
    cryptoRelease(id) {
      ctx.crypto.release(id);
    },
    sleep(ms, id) {
      try {
        return hostAsync(ctx.timers.sleep(Number(id), Number(ms)));
      } catch (err) {
        // isolated-vm passes built-in error types on, not subclasses.
        if (err instanceof TimerLimitError) throw new RangeError(err.message);
        throw err;
      }
    },
    timerCancel(id) {
      ctx.timers.cancel(Number(id));
    },
    fetch(raw) {
      if (ctx.fetchRefused !== undefined) return hostAsync(Promise.reject(new TypeError(ctx.fetchRefused)));
      const parsed = SubrequestInitSchema.safeParse(raw);
      if (!parsed.success) return hostAsync(Promise.reject(new TypeError(`fetch: malformed subrequest from worker ${ctx.workerName}: ${describeIssues(parsed.error)}`)));
      // Registered before this returns: the isolate's next call may be a fetchWrite for it.
      return hostAsync(ctx.subrequests.start(parsed.data, () => ctx.countSubrequest()));
    },
    fetchWrite(id, chunk) {
      if (!SubrequestIdSchema.safeParse(id).success || (chunk !== null && !(chunk instanceof ArrayBuffer))) {
        return hostAsync(Promise.reject(new TypeError(`fetch: malformed body chunk from worker ${ctx.workerName}`)));
      }
      return hostAsync(ctx.subrequests.write(id, chunk));
    },
    fetchRead(id) {
      if (!SubrequestIdSchema.safeParse(id).success) return hostAsync(Promise.reject(new TypeError(`fetch: malformed body read from worker ${ctx.workerName}`)));
      return hostAsync(ctx.subrequests.read(id));
    },
    fetchCancel(id) {
      if (SubrequestIdSchema.safeParse(id).success) ctx.subrequests.cancel(id);
    },
    aiRun(binding, model, inputsJson) {
      return hostAsync((async () => {
        const args = AiRunArgsSchema.safeParse([binding, model, inputsJson]);
        if (!args.success) throw new TypeError(`ai: malformed run() call from worker ${ctx.workerName}: ${describeIssues(args.error)}`);
        return ctx.ai.run(args.data[0], args.data[1], args.data[2], () => ctx.countSubrequest());
      })());
    },
    aiRead(handle) {
      return hostAsync((async () => {
        const h = AiHandleSchema.safeParse(handle);
        if (!h.success) throw new TypeError(`ai: malformed stream handle from worker ${ctx.workerName}`);
        return ctx.ai.read(h.data);
      })());
    },
    aiCancel(handle) {
      const h = AiHandleSchema.safeParse(handle);
      if (h.success) ctx.ai.cancel(h.data);
    },
    actorId(binding, kind, value) {
      return ctx.actors.id(binding, kind, value);
    },
    actorFetch(binding, id, name, request) {
      return hostAsync(ctx.actors.fetch(binding, id, name, request, () => ctx.countSubrequest()));
    },
    actorWrite(id, chunk) {
      if (!ActorCallIdSchema.safeParse(id).success || (chunk !== null && !(chunk instanceof ArrayBuffer))) {
        return hostAsync(Promise.reject(new TypeError(`stub.fetch(): malformed body chunk from worker ${ctx.workerName}`)));
      }
      return hostAsync(ctx.actors.streams.write(id, chunk));
    },
    actorRead(id) {
      if (!ActorCallIdSchema.safeParse(id).success) return hostAsync(Promise.reject(new TypeError(`stub.fetch(): malformed body read from worker ${ctx.workerName}`)));
      return hostAsync(ctx.actors.streams.read(id));
    },
    actorCancel(id, reason) {
      if (ActorCallIdSchema.safeParse(id).success) ctx.actors.streams.cancel(id, String(reason).slice(0, 1024));
    },
    rpcCallback(token, message) {
      return hostAsync((async () => {
        ctx.countSubrequest();
        return invokeCallback(token, message);
      })());
    },
    serviceCall(binding, request) {
      return hostAsync(ctx.services.call(binding, request, () => ctx.countSubrequest()));
    },
    loaderGet(binding, id) {
      return ctx.loaders.get(binding, id);
    },
    loaderLoad(binding, id, code, ticket) {
      return hostAsync(ctx.loaders.load(binding, id, code, () => ctx.countSubrequest(), ticket));
    },
    loaderCall(handle, entrypoint, request, warm) {
      return hostAsync(ctx.loaders.call(handle, entrypoint, request, () => ctx.countSubrequest(), warm === true));
    },
    storage(op, a, b) {
      return storageCall(ctx.storage, op, a, b);
    },
    socketSend(socket, data) {
      if (!ctx.sockets) throw new Error(`worker ${ctx.workerName}: WebSockets are not available here`);
      try {
        return ctx.sockets.send(Number(socket), data);
      } catch (err) {
        // isolated-vm passes built-in error types on, not subclasses.
        if (err instanceof SocketLimitError) throw new RangeError(err.message);
        throw err;
      }
    },
    socketClose(socket, code, reason) {
      ctx.sockets?.close(Number(socket), code, reason);
    },
    hibernation(op, a, b, c) {
      if (!ctx.hibernation) throw new TypeError('the WebSocket Hibernation API (state.acceptWebSocket() and the rest) is only available in a DurableActor');
      try {
        return ctx.hibernation(String(op), a, b, c);
      } catch (err) {
        // isolated-vm passes built-in error types on, and the class name with a subclass.
        if (err instanceof SocketLimitError) throw new RangeError(err.message);
        if (err instanceof EdgeError) throw new Error(err.message);
        throw err;
      }
    },
  };
}
