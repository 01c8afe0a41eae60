// Agent-to-agent calls for actors, on a port of their own (never the user-facing one, so a
// client cannot address an actor directly). A call carries the request as the worker made
// it; the answer is the actor's response once its writes are durable.
//
// Status 421 (Misdirected Request) means "not executed here, ask the ring again": the only
// answer a caller may retry, because anything else may have run the actor's code. A 500
// with x-edge-exception carries the exception the actor's code threw (name and message,
// never the stack), rethrown at the caller as if the actor were local (ActorExceptionError);
// one with x-edge-error an owner's failure (PeerCallError). Neither becomes a Response.

import { EdgeError } from '../../common/errors.js';

export const PEER_PATH = '/actors/';
export const MISDIRECTED = 421;

export interface PeerRequest { url: string; method: string; headers: [string, string][]; body: Uint8Array | null }
export interface PeerResponse {
  status: number;
  statusText: string;
  headers: [string, string][];
  body: Uint8Array;
  /** A WebSocket the actor accepted, by this agent's registry id. */
  webSocket?: number;
  /** Between agents: the NATS socket id carrying that WebSocket. */
  webSocketSid?: string;
}

/** The request was not run: the caller may route it again. */
export class NotHereError extends EdgeError {}

/** The call names an actor id its DurableActor never made (the HMAC tag does not check): refused with 400. */
export class ForeignActorIdError extends EdgeError {}

/**
 * Sends a call to another agent's peer port (peer-server.ts does it over HTTP). Rejects
 * with NotHereError when the peer answered 421, with PeerUnreachableError when nothing
 * was sent; any other failure leaves open whether the call ran.
 */
export type PeerForwarder = (peerAddress: string, namespace: string, actor: string, id: string, req: PeerRequest, hops: number, token?: string) => Promise<PeerResponse>;

export interface PeerHandler {
  /** Runs an actor call; throws NotHereError when this agent does not take it. */
  call(namespace: string, actor: string, id: string, req: PeerRequest, hops: number): Promise<PeerResponse>;
}
