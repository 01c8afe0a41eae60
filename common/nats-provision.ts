import type { NatsConnection } from 'nats';
import { ensureActorStream } from './actor-stream.js';
import { EdgeError } from './errors.js';
import type { Logger } from './log.js';
import {
  ACTOR_ALARMS_BUCKET, ACTORS_BUCKET, ACTORS_STREAM, AGENT_REPORTS_BUCKET, AGENTS_BUCKET, BUNDLES_BUCKET, LOGS_STREAM,
  logsStreamConfig, openBuckets, WORKERS_BUCKET, type EdgeBuckets,
} from './nats.js';

// Who creates the streams. Agents may not create, change or delete a stream
// (common/nats-auth.ts), so the operator (and, for `edge dev` and the tests, cli/local/ as
// soon as nats-server is up) creates every one with the settings the code relies on, and an
// agent that starts first waits until they exist.

/** Every stream the system uses: the KV buckets', the object store's, the actor log and the console lines. */
export const EDGE_STREAMS: readonly string[] = [
  ...[WORKERS_BUCKET, ACTORS_BUCKET, ACTOR_ALARMS_BUCKET, AGENTS_BUCKET, AGENT_REPORTS_BUCKET].map((b) => `KV_${b}`),
  `OBJ_${BUNDLES_BUCKET}`,
  ACTORS_STREAM,
  LOGS_STREAM,
];

/** The streams an agent needs are not there, and it stopped waiting for them. */
export class NatsStreamsMissingError extends EdgeError {
  constructor(readonly missing: string[]) {
    super(`NATS streams ${missing.join(', ')} do not exist (the operator creates them) and the wait for them was stopped`, { context: { missing: missing.join(',') } });
  }
}

export interface ProvisionOptions {
  log: Logger;
  /** JetStream replicas of the actor stream when it is created (3 on a NATS cluster). */
  actorLogReplicas?: number;
  /** JetStream replicas of the KV buckets and the object store when they are created (3 on a NATS cluster). */
  kvReplicas?: number;
}

/** Creates whatever stream is missing (a connection allowed to) and returns the buckets. */
export async function provisionNats(nc: NatsConnection, opts: ProvisionOptions): Promise<EdgeBuckets> {
  const buckets = await openBuckets(nc, opts.kvReplicas ?? 1);
  const jsm = await nc.jetstreamManager();
  const bundles = await jsm.streams.info(`OBJ_${BUNDLES_BUCKET}`);
  if ((opts.kvReplicas ?? 1) > bundles.config.num_replicas) {
    await jsm.streams.update(bundles.config.name, { ...bundles.config, num_replicas: opts.kvReplicas! });
  }
  await ensureActorStream(jsm, opts.actorLogReplicas ?? 1, opts.log);
  try {
    await jsm.streams.info(LOGS_STREAM);
  } catch {
    await jsm.streams.add(logsStreamConfig()).catch(async (err: unknown) => {
      // Created by another process at the same moment.
      await jsm.streams.info(LOGS_STREAM).catch(() => { throw err; });
    });
  }
  return buckets;
}

/**
 * For a connection that may not create streams (an agent): waits until every stream exists,
 * then binds the buckets. `stopped` ends the wait early (with an error).
 */
export async function bindBuckets(nc: NatsConnection, log: Logger, opts: { pollMs?: number; stopped?: () => boolean; onWait?: (why: string) => void } = {}): Promise<EdgeBuckets> {
  const jsm = await nc.jetstreamManager();
  let told = false;
  for (;;) {
    const missing: string[] = [];
    for (const s of EDGE_STREAMS) {
      try { await jsm.streams.info(s); } catch (err) {
        if ((err as Error).message !== 'stream not found') throw err;
        missing.push(s);
      }
    }
    if (missing.length === 0) break;
    if (nc.isClosed() || opts.stopped?.()) throw new NatsStreamsMissingError(missing);
    if (!told) log.info('waiting for the operator to create the NATS streams', { missing });
    opts.onWait?.(`waiting for the operator to create the NATS streams ${missing.join(', ')}`);
    told = true;
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 1000));
  }
  return openBuckets(nc);
}
