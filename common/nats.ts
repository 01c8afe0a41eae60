import {
  connect, DiscardPolicy, nanos, RetentionPolicy, StorageType, type ConnectionOptions, type JetStreamManager, type KV, type NatsConnection, type ObjectStore, type StreamConfig,
} from 'nats';
import * as z from 'zod';
import { LimitsSchema, RouteSchema } from './api/edgeworker.js';
import { EgressPolicySchema } from './api/policy.js';
import { AI_TASKS } from './api/edgepolicy.js';
import { regionName } from './api/meta.js';
import { ACTOR_ID_PATTERN, agentToken } from './keys.js';

// The one place for the NATS layout (DESIGN.md section 5): bucket names, subjects and the
// schemas of every value that crosses NATS (the key shapes are in keys.ts). Both the operator and the
// agents import this; every value read from NATS is parsed with these schemas.

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
 * One line of a worker, as `edge logs` prints it: a console line, an uncaught exception
 * (kind `exception`: the error's text, its stack in the worker's own source, the ray id
 * the client was given) or a request it served (kind `request`, on SUBJECTS.requests).
 */
export const LogLineSchema = z.object({
  /** ISO time the agent saw the line. */
  ts: z.string(),
  /** The console method: log, info, warn, error, debug (`error` for an exception, `info` for a request). */
  level: z.string(),
  message: z.string(),
  region: z.string(),
  node: z.string(),
  /** `<namespace>/<name>` (workerRef). */
  worker: z.string(),
  /** Absent: a console line. */
  kind: z.enum(['console', 'exception', 'request']).optional(),
  /** The x-edge-ray the client got (exceptions and failed requests). */
  ray: z.string().optional(),
  /** An exception's stack frames, the worker's own only (the runtime's are left out), one per line. */
  stack: z.string().optional(),
  method: z.string().optional(),
  url: z.string().optional(),
  status: z.number().int().optional(),
  /** Wall time from the request's arrival to its response's head. */
  durationMs: z.number().optional(),
  /** CPU time the worker's isolate used for the request. */
  cpuMs: z.number().optional(),
});
export type LogLine = z.infer<typeof LogLineSchema>;

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

const sha256Digest = () => z.string().regex(/^sha256:[a-f0-9]{64}$/);

/** Where one AI binding's model server lives in one region. */
/** A service binding's target: an EdgeWorker (of the binding worker's own namespace) and, optionally, its named entrypoint. */
export const ServiceTargetSchema = z.object({ namespace: z.string(), worker: z.string(), entrypoint: z.string().optional() });
export type ServiceTarget = z.infer<typeof ServiceTargetSchema>;

export const AiServiceRefSchema = z.object({
  service: z.string().min(1),
  namespace: z.string().min(1),
  port: z.number().int().min(1).max(65_535),
  /** The catalogue's task type of the model the server serves; absent: text-generation. */
  task: z.enum(AI_TASKS).optional(),
});

export const WorkerConfigSchema = z.object({
  namespace: z.string().min(1),
  name: z.string().min(1),
  uid: z.string(),
  generation: z.number().int().min(0),
  /** Identity of what the isolates run (bundle, limits, env); agents report readiness per version. */
  version: sha256Digest(),
  /** Object-store name of the bundle. */
  bundleDigest: sha256Digest(),
  /** Regions the worker is placed in. */
  regions: z.array(regionName()),
  routes: z.array(RouteSchema),
  limits: LimitsSchema,
  minWarmIsolates: z.number().int().min(0),
  /** spec.placement.shard (docs/shards.md); absent: the agents' default. */
  shard: z.object({ min: z.number().int().min(0), max: z.number().int().min(1) }).optional(),
  compatibilityDate: z.string().optional(),
  /** spec.compatibilityFlags (nodejs_compat: the isolate provides node:* modules). */
  compatibilityFlags: z.array(z.string()).optional(),
  /** The admin's egress policy for the worker's namespace (absent: DEFAULT_EGRESS_POLICY). */
  egress: EgressPolicySchema.optional(),
  env: z.object({
    /** vars, in clear. */
    text: z.record(z.string(), z.string()),
    /** Secret bindings: binding -> the value sealed to the agents (common/sealing.ts; secretAad names the binding). */
    sealed: z.record(z.string(), z.string()).default({}),
    /** Durable Object namespace bindings: binding -> the DurableActor (uid keys its ids). */
    actors: z.record(z.string(), z.object({ namespace: z.string(), actor: z.string(), uid: z.string() })).default({}),
    /** Service bindings: binding -> an EdgeWorker of the same namespace (and its entrypoint). Absent when there are none. */
    services: z.record(z.string(), ServiceTargetSchema).optional(),
    /** Worker Loader bindings (names): dynamic workers run on the caller's agent. Absent when there are none. */
    workerLoaders: z.array(z.string()).optional(),
    ai: z.record(z.string(), z.object({
      model: z.string(),
      /** region -> the Service of that region's model server. */
      services: z.record(z.string(), AiServiceRefSchema),
      /** The binding's other models (AiBinding.models): model -> region -> its server. Absent when none. */
      models: z.record(z.string(), z.record(z.string(), AiServiceRefSchema)).optional(),
    })),
  }),
});
export type WorkerConfig = z.infer<typeof WorkerConfigSchema>;

export const ActorConfigSchema = z.object({
  namespace: z.string().min(1),
  name: z.string().min(1),
  /** The DurableActor's uid: the key ids are derived with, so ids never collide across CRs. */
  uid: z.string().min(1),
  generation: z.number().int().min(0),
  className: z.string().min(1),
  /** The EdgeWorker (same namespace) whose bundle exports the class. */
  worker: z.string().min(1),
  region: regionName(),
  idleTimeoutSeconds: z.number().int().min(1),
  maxBytesPerActor: z.number().int().min(1),
  /** spec.storage.backend (absent: kv): 'sqlite' gives the class a SQLite database per actor (node-agent/shim/sql.js). */
  storageBackend: z.enum(['kv', 'sqlite']).optional(),
});
export type ActorConfig = z.infer<typeof ActorConfigSchema>;

export const ActorAlarmSchema = z.object({
  namespace: z.string(),
  actor: z.string(),
  id: z.string().regex(ACTOR_ID_PATTERN),
  region: regionName(),
  /** Epoch milliseconds. */
  time: z.number(),
  /**
   * The id's name (idFromName) when the activation that set the alarm knew it: the alarm's
   * activation of an evicted actor has ctx.id.name, as on Workers (the Agents SDK needs it).
   */
  name: z.string().optional(),
});
export type ActorAlarm = z.infer<typeof ActorAlarmSchema>;

export const PresenceSchema = z.object({
  agent: z.string().min(1),
  node: z.string().min(1),
  region: regionName(),
  /** Base URL of this agent's HTTP front (user traffic). */
  address: z.string().url(),
  /** Base URL of this agent's peer port: actor calls forwarded by other agents. */
  peerAddress: z.string().url().optional(),
  /** The agent is considered gone when no refresh arrived for this long. */
  ttlMs: z.number().int().min(100),
  startedAt: z.string(),
  /** True while the agent drains (SIGTERM): it takes no new actors. */
  draining: z.boolean().default(false),
  load: z.object({ workers: z.number().int().min(0), inflight: z.number().int().min(0) }).optional(),
  /**
   * Requests in flight here per worker ref (`ns/name`), smoothed; only the busy ones. Every
   * host sums them over the region to size each worker's shard (docs/shards.md).
   */
  shardLoad: z.record(z.string(), z.number().min(0)).optional(),
  /**
   * Set on an agent's front when its isolates run in this many isolate-host processes
   * (`edge agent --isolate-hosts N`): the front hosts no actors (common/isolate-hosts.ts).
   */
  isolateHosts: z.number().int().min(1).optional(),
  /**
   * Set on an isolate-host process: the agent it belongs to (`of`) and its share of
   * namespaces (those whose isolateHostIndex(namespace, count) is `index`). `index` = `count`
   * is the agent's cordon host, which serves no namespace's actors (isCordonShare).
   */
  isolateHost: z.object({ of: z.string().min(1), index: z.number().int().min(0), count: z.number().int().min(1) }).optional(),
});
export type Presence = z.infer<typeof PresenceSchema>;

export const WorkerReportSchema = z.object({
  /** The version this agent tried last. */
  version: z.string(),
  state: z.enum(['ready', 'error']),
  error: z.string().optional(),
  /** When state is error: the version still serving, if any. */
  servingVersion: z.string().optional(),
  /** Whether this agent is in the worker's shard (docs/shards.md); absent without shards. */
  shardMember: z.boolean().optional(),
});
export type WorkerReport = z.infer<typeof WorkerReportSchema>;

export const AgentReportSchema = z.object({
  agent: z.string().min(1),
  region: regionName(),
  /** Bumped on every change, so a reader can tell an old report from a new one. */
  seq: z.number().int().min(0),
  /** `<namespace>.<name>` (workerKey) -> what this agent has for that worker. */
  workers: z.record(z.string(), WorkerReportSchema),
  /** `<namespace>.<name>` (actorClassKey) of a DurableActor -> actors active on this agent. */
  actors: z.record(z.string(), z.object({ active: z.number().int().min(0) })).default({}),
});
export type AgentReport = z.infer<typeof AgentReportSchema>;

const enc = new TextEncoder();
const dec = new TextDecoder();
export const encodeJson = (v: unknown): Uint8Array => enc.encode(JSON.stringify(v));
/** Parses a NATS payload with a schema; the error names what was being read. */
export function decodeJson<T extends z.ZodType>(schema: T, data: Uint8Array, what: string): z.infer<T> {
  let raw: unknown;
  try {
    raw = JSON.parse(dec.decode(data));
  } catch (err) {
    throw new Error(`${what}: not JSON: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new Error(`${what}: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

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
