import * as z from 'zod';
import { LimitsSchema, RouteSchema } from './api/edgeworker.js';
import { EgressPolicySchema } from './api/policy.js';
import { AI_TASKS } from './api/edgepolicy.js';
import { regionName } from './api/meta.js';
import { ACTOR_ID_PATTERN } from './keys.js';

// The schemas of every value that crosses NATS (the layout, subjects and buckets are in
// nats.ts, which re-exports the types): every value read from NATS is parsed with these.
// A module of their own so that a process that only moves bytes (the agent's front) does
// not build them.

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

const dec = new TextDecoder();
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
