// What one actor request changes in its storage, as committed to the actor's log in one
// piece when the request ends (the output gate). Shared by the storage the isolate sees
// (actor-storage.ts) and the durable log (actor-log.ts).

import { EdgeError } from './errors.js';

/** Values are V8-serialized (structured clone), exactly as node:v8 serialize() writes them. */
export type StorageOp =
  | { op: 'put'; key: string; value: Uint8Array }
  | { op: 'delete'; key: string }
  | { op: 'deleteAll' }
  /** Epoch milliseconds, or null to clear. */
  | { op: 'alarm'; time: number | null };

/** Where an actor lives in NATS: DurableActor namespace and name, and the actor's id (64 hex). */
export interface ActorAddress {
  namespace: string;
  actor: string;
  id: string;
}

/** The state an activation starts from. */
export interface ActorState {
  values: Map<string, Uint8Array>;
  alarm: number | null;
}

/** A write refused because another owner claimed the actor since: the caller must stop serving it. */
export class FencedError extends EdgeError {
  constructor(readonly address: ActorAddress, message: string, readonly details?: FencedDetails) {
    super(message, { context: { actor: `${address.namespace}/${address.actor}/${address.id}` } });
  }
}

/** What a fenced write expected and what the log held (actor-log.ts fills these in). */
export interface FencedDetails {
  /** claim, commit, release or snapshot. */
  write: string;
  /** The epoch the refused write was made under (for a claim: the epoch it tried to take). */
  epoch: number;
  /** The last log sequence the writer believed in. */
  expectedSeq: number;
  /** The log's real last sequence, when the server said. */
  actualSeq?: number;
}
