import {
  connect, DiscardPolicy, nanos, RetentionPolicy, StorageType, type ConnectionOptions, type JetStreamManager, type KV, type NatsConnection, type ObjectStore, type StreamConfig,
} from 'nats';
import { agentToken } from './keys.js';

// The one place for the NATS layout (DESIGN.md section 5): bucket names, subjects, streams
// and buckets (the key shapes are in keys.ts; the schemas of the values, in nats-messages.ts).
// Both the operator and the agents import this. It builds no zod schema: the agent's front
// imports it and no schema (zod schemas are ~1.6 KiB of heap each, in every process that
// evaluates their module).
export type { ActorAlarm, ActorConfig, AgentReport, LogLine, Presence, ServiceTarget, WorkerConfig, WorkerReport } from './nats-messages.js';

/** KV: workerKey `<namespace>.<name>` -> WorkerConfig, written by the operator's leader. */
export const WORKERS_BUCKET = 'edge-workers';
/** Object store: bundle source bytes, named by their sha256 digest. */
export const BUNDLES_BUCKET = 'edge-bundles';
/** KV: agentKey `<region>.<agent>` -> Presence, refreshed by each agent. */
export const AGENTS_BUCKET = 'edge-agents';
/** KV: actorClassKey `<namespace>.<name>` -> ActorConfig (a DurableActor), written by the operator's leader. */
export const ACTORS_BUCKET = 'edge-actors';
/** KV: alarmKey `<namespace>.<actor>.<id>` -> ActorAlarm: alarms set by actors, so they fire even when the actor is not in memory. */
export const ACTOR_ALARMS_BUCKET = 'edge-actor-alarms';
/** KV: agentKey `<region>.<agent>` -> AgentReport, written by each agent when its workers change. */
export const AGENT_REPORTS_BUCKET = 'edge-agent-reports';

/**
 * The server drops presence keys not refreshed for this long; liveness itself is judged
 * by readers against each agent's own `ttlMs` (see PresenceSchema), so this only
 * garbage-collects the keys of agents that died without deleting theirs.
 */
export const PRESENCE_GC_MS = 60_000;
export const DEFAULT_PRESENCE_TTL_MS = 5_000;

export const SUBJECTS = {
  /** An agent's report changed: `edge.agent.status.<region>.<agent>` (payload: AgentReport). */
  agentStatus: (region: string, agent: string) => `edge.agent.status.${region}.${agentToken(agent)}`,
  agentStatusAll: 'edge.agent.status.>',
  /** Actor routing and migration events (issue 5). */
  route: (region: string) => `edge.route.${region}`,
  actorMigrate: (region: string) => `edge.actor.migrate.${region}`,
  /** One direction of a WebSocket between two agents: `in` towards the actor, `out` towards the client. */
  socket: (sid: string, dir: 'in' | 'out') => `edge.ws.${sid}.${dir}`,
  /** Console output of one worker (and of its actors), from every agent: `edge.logs.<namespace>.<name>` (payload: LogLine). */
  logs: (namespace: string, name: string) => `edge.logs.${namespace}.${name}`,
  logsAll: 'edge.logs.>',
  /**
   * One line per request a worker served (`edge logs --requests`): `edge.logs.<namespace>.<name>.requests`,
   * a subject of its own so a busy worker's requests do not push its console lines out of the stream.
   */
  requests: (namespace: string, name: string) => `edge.logs.${namespace}.${name}.requests`,
} as const;

/**
 * JetStream stream keeping the last minutes of workers' console output (SUBJECTS.logs),
 * so `edge logs` can show recent lines: memory storage, bounded by age, count per worker
 * and bytes. Agents publish plain NATS messages; the stream captures them.
 */
export const LOGS_STREAM = 'EDGE_LOGS';
export const LOGS_MAX_AGE_MS = 15 * 60_000;
export const LOGS_MAX_PER_WORKER = 1000;
export const LOGS_MAX_BYTES = 64 * 1024 * 1024;

/** The settings of LOGS_STREAM. */
export function logsStreamConfig(): Partial<StreamConfig> {
  return {
    name: LOGS_STREAM,
    subjects: [SUBJECTS.logsAll],
    storage: StorageType.Memory,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: nanos(LOGS_MAX_AGE_MS),
    max_msgs_per_subject: LOGS_MAX_PER_WORKER,
    max_bytes: LOGS_MAX_BYTES,
    num_replicas: 1,
  };
}


/**
 * JetStream stream holding every actor's durable log (node-agent/actor-log.ts): file
 * storage, no age limit, rollup headers (snapshots) and direct get (loads) allowed.
 */
export const ACTORS_STREAM = 'EDGE_ACTORS';
/**
 * Actor log subjects. `namespace` and `actor` are DNS labels and `id` 64 lowercase hex,
 * so each is one subject token; `gen` is a snapshot generation (16 lowercase hex).
 */
export const ACTOR_SUBJECTS = {
  /** Every subject of ACTORS_STREAM. */
  stream: ['edge.actor.log.>', 'edge.actor.snap.>'],
  /** One actor's log: claims, commits, releases and snapshot markers, in order. */
  log: (namespace: string, actor: string, id: string) => `edge.actor.log.${namespace}.${actor}.${id}`,
  /** The chunks of one snapshot generation of one actor (the marker on the log names the generation). */
  snapshot: (namespace: string, actor: string, id: string, gen: string) => `edge.actor.snap.${namespace}.${actor}.${id}.${gen}`,
  /** Every snapshot generation of one actor (a purge filter). */
  snapshotAll: (namespace: string, actor: string, id: string) => `edge.actor.snap.${namespace}.${actor}.${id}.*`,
  /** Every actor's log of one DurableActor (a purge filter). */
  logAllOf: (namespace: string, actor: string) => `edge.actor.log.${namespace}.${actor}.*`,
  /** Every actor's snapshots of one DurableActor (a purge filter). */
  snapshotAllOf: (namespace: string, actor: string) => `edge.actor.snap.${namespace}.${actor}.>`,
} as const;


const enc = new TextEncoder();
export const encodeJson = (v: unknown): Uint8Array => enc.encode(JSON.stringify(v));

export interface EdgeBuckets {
  workers: KV;
  actors: KV;
  alarms: KV;
  bundles: ObjectStore;
  agents: KV;
  reports: KV;
}

/**
 * Opens (creating when missing) the buckets with the one configuration everyone uses, so
 * the first of operator or agent to start creates them and the others bind. On a NATS
 * cluster give `replicas` 3: a bucket at one replica goes with the server that holds it.
 */
export async function openBuckets(nc: NatsConnection, replicas = 1): Promise<EdgeBuckets> {
  const js = nc.jetstream();
  // `replicas` matters only to the one that creates a bucket; an existing one is bound as it is.
  const [workers, actors, alarms, bundles, agents, reports] = await Promise.all([
    js.views.kv(WORKERS_BUCKET, { history: 1, replicas }),
    js.views.kv(ACTORS_BUCKET, { history: 1, replicas }),
    js.views.kv(ACTOR_ALARMS_BUCKET, { history: 1, replicas }),
    // nats.js 2.29 sends os({ replicas }) to the server as an unknown field: provisionNats sets it.
    js.views.os(BUNDLES_BUCKET),
    js.views.kv(AGENTS_BUCKET, { history: 1, ttl: PRESENCE_GC_MS, replicas }),
    js.views.kv(AGENT_REPORTS_BUCKET, { history: 1, replicas }),
  ]);
  return { workers, actors, alarms, bundles, agents, reports };
}

/**
 * One object of an object store bucket, read with message gets: its meta message, then its
 * chunks one by one. ObjectStore.get() subscribes an ordered consumer per call, which the
 * server keeps until it has been inactive a while: an agent loading a region's 10,000
 * bundles at start left thousands behind and ran into the server's consumer limit. Null
 * when the object is absent or deleted; a link is not followed (bundles are never links).
 * The caller checks the bytes against the digest it expects.
 */
export async function readObjectDirect(jsm: JetStreamManager, bucket: string, name: string): Promise<Uint8Array | null> {
  const stream = `OBJ_${bucket}`;
  // The object store's meta subject: the name in padded base64url (nats.js's Base64UrlPaddedCodec).
  const metaSubject = `$O.${bucket}.M.${Buffer.from(name).toString('base64').replace(/\+/g, '-').replace(/\//g, '_')}`;
  let meta;
  try {
    meta = await jsm.streams.getMessage(stream, { last_by_subj: metaSubject });
  } catch (err) {
    if ((err as { code?: string }).code === '404') return null;
    throw err;
  }
  const info = JSON.parse(new TextDecoder().decode(meta.data)) as { nuid: string; size: number; chunks: number; deleted?: boolean; options?: { link?: unknown } };
  if (info.deleted || info.options?.link) return null;
  const out = new Uint8Array(info.size);
  let at = 0;
  let seq = 0;
  for (let i = 0; i < info.chunks; i++) {
    // The server's STREAM.MSG.GET takes next_by_subj (the first message on the subject from seq); nats.js's type omits it.
    const next = { seq: seq + 1, next_by_subj: `$O.${bucket}.C.${info.nuid}` } as unknown as { seq: number };
    const m = await jsm.streams.getMessage(stream, next);
    if (at + m.data.length > out.length) throw new Error(`object ${name} in ${bucket}: its chunks hold more than its ${info.size} bytes`);
    out.set(m.data, at);
    at += m.data.length;
    seq = m.seq;
  }
  if (at !== info.size) throw new Error(`object ${name} in ${bucket}: ${at} bytes in its chunks, ${info.size} in its meta`);
  return out;
}

/**
 * Connects with the reconnect behaviour every long-running component wants.
 * noAsyncTraces: nats.js otherwise builds an Error (a stack capture) for every request and
 * every request's timeout, in case it fails: two per actor commit, 4 % of an actor host's CPU.
 * Our errors name the actor or worker they are about instead.
 */
export function connectNats(url: string, name: string, extra: Partial<ConnectionOptions> = {}): Promise<NatsConnection> {
  return connect({ servers: url, name, maxReconnectAttempts: -1, reconnectTimeWait: 250, pingInterval: 5_000, noAsyncTraces: true, ...extra });
}
