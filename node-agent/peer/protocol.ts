// Agent-to-agent calls for actors, on a port of their own (never the user-facing one, so a
// client cannot address an actor directly). A call carries the request as the worker made
// it; the answer is the actor's response once its writes are durable.
//
// Status 421 (Misdirected Request) means "not executed here, ask the ring again": the only
// answer a caller may retry, because anything else may have run the actor's code.
//
// Proving a call did not run: the caller sends the request with `Expect: 100-continue` and a
// chunked body, and sends the body (its last chunk ends the request) only once the peer
// answered 100 Continue. The peer runs nothing before it has the whole request, so a peer
// that never said 100 (paused, stalled, gone) never ran it, and the caller may route it
// again. Once the body went, the peer sends 102 Processing every heartbeat while the call
// runs: a peer silent for longer than the caller's bound (the presence TTL plus a margin)
// stopped answering mid-call, and the outcome is unknown to the caller.
//
// A 500 with x-edge-exception carries the exception the actor's code threw (name and
// message, never the stack), rethrown at the caller as if the actor were local
// (ActorExceptionError); one with x-edge-error an owner's failure (PeerCallError). Neither
// becomes a Response.

import { EdgeError } from '../../common/errors.js';
import type { BodyStream } from '../../common/body-stream.js';

export const PEER_PATH = '/actors/';
export const MISDIRECTED = 421;
/** A forwarded call the peer itself lost track of (it forwarded it on and that hop went silent): outcome unknown. */
export const OUTCOME_UNKNOWN = 504;
/** Header of a 504 that means OUTCOME_UNKNOWN (a 504 from anything else is treated the same). */
export const OUTCOME_HEADER = 'x-edge-outcome';
/** Request header: how often the peer should send 102 Processing while the call runs (ms). */
export const HEARTBEAT_HEADER = 'x-edge-heartbeat-ms';
/**
 * A peer that took a call (an actor call, a forwarded request) is given up on once it has
 * been silent for its presence TTL plus this: by then the region has dropped it.
 */
export const SILENCE_MARGIN_MS = 1_000;
/** Heartbeats (102 Processing) a peer sends while a call runs: the caller's bound / 5, within these. */
export const MIN_HEARTBEAT_MS = 50;
export const MAX_HEARTBEAT_MS = 2_000;
export const heartbeatFor = (silenceMs: number): number => Math.min(MAX_HEARTBEAT_MS, Math.max(MIN_HEARTBEAT_MS, Math.floor(silenceMs / 5)));
/** The interval a caller asked for in HEARTBEAT_HEADER, within bounds (MAX_HEARTBEAT_MS when it asked for none). */
export function askedHeartbeat(h: string | string[] | undefined): number {
  const asked = Number(h);
  return Number.isFinite(asked) && asked > 0 ? Math.min(MAX_HEARTBEAT_MS, Math.max(MIN_HEARTBEAT_MS, asked)) : MAX_HEARTBEAT_MS;
}

export interface PeerRequest {
  url: string;
  method: string;
  headers: [string, string][];
  body: Uint8Array | null;
  /** A streamed body (then `body` is null): read as the actor reads it. */
  stream?: BodyStream;
}
export interface PeerResponse {
  status: number;
  statusText: string;
  headers: [string, string][];
  /** The whole body (empty when `stream` is set). */
  body: Uint8Array;
  /** A streamed body: the reader must read it to its end or cancel it (the actor's input gate waits for that). */
  stream?: BodyStream;
  /**
   * On the owner only: settles once the actor's request is over (its streamed body ended or
   * was cancelled, and what it wrote meanwhile committed).
   */
  ended?: Promise<void>;
  /** A WebSocket the actor accepted, by this agent's registry id. */
  webSocket?: number;
  /** Between agents: the NATS socket id carrying that WebSocket. */
  webSocketSid?: string;
}

/** The request was not run: the caller may route it again. */
export class NotHereError extends EdgeError {}

/**
 * The call reached the peer (it had the whole request) and then the peer went silent or the
 * connection broke before the answer: the call may or may not have run. Never retried.
 */
export class CallOutcomeUnknownError extends EdgeError {}

/** The call names an actor id its DurableActor never made (the HMAC tag does not check): refused with 400. */
export class ForeignActorIdError extends EdgeError {}

export interface PeerForwardOptions {
  /**
   * How long the peer may stay silent (no 100 Continue, no 102 heartbeat, no answer byte)
   * before the caller gives up on it; the router passes the owner's presence TTL plus a
   * margin. Default 120 s.
   */
  silenceMs?: number;
}

/**
 * Sends a call to another agent's peer port (peer-server.ts does it over HTTP). Rejects
 * with NotHereError when the peer answered 421, with PeerUnreachableError when the peer
 * certainly did not run it (not connected, or silent before it had the whole request),
 * with CallOutcomeUnknownError when it may have.
 */
export type PeerForwarder = (peerAddress: string, namespace: string, actor: string, id: string, req: PeerRequest, hops: number, token?: string, opts?: PeerForwardOptions) => Promise<PeerResponse>;

export interface PeerHandler {
  /** Runs an actor call; throws NotHereError when this agent does not take it. */
  call(namespace: string, actor: string, id: string, req: PeerRequest, hops: number): Promise<PeerResponse>;
}
