import type { Logger } from '../common/log.js';
import type { NatsClientAuth } from '../common/nats-auth.js';
import type { SecretSealer } from '../common/sealing.js';
import type { Resolver } from './bindings/subrequests.js';
import type { HostShare } from './hosts/assignment.js';
import type { PinHosts } from './hosts/cpu-affinity.js';

// What an agent is started with and what both kinds share: an Agent (node-agent/agent.ts),
// whose isolates run in this process, and an AgentFront (node-agent/front.ts) with its
// isolate-host processes. Apart so that a front never imports agent.ts, and with it the
// isolate runtime (isolated-vm, the Workers API shim, the bindings) that only its hosts run
// (about 14 MiB of a front's memory: docs/agent.md, "Memory of an idle agent").

export interface HostPort { host: string; port: number }

export interface AgentConfig {
  log: Logger;
  /**
   * Standalone (a directory of manifests; region only names the model-server Services ai
   * bindings reach, default STANDALONE_REGION) or following the operator over NATS.
   */
  source: { kind: 'directory'; dir: string; region?: string } | {
    kind: 'nats'; url: string; region: string; node: string;
    /** Credentials (role agent) and the server's CA; none for a server without auth. */
    auth?: Omit<NatsClientAuth, 'role'>;
    /** Opens the Secret values the operator sealed. */
    sealer?: SecretSealer;
    /** Where the sealer's key is: what isolate hosts get, since a SecretSealer cannot cross IPC. */
    sealingKeyFile?: string;
  };
  agentName: string;
  /** The public HTTP listener; an isolate host's is a Unix socket (`path`) only its front reaches. */
  listen: HostPort | { path: string };
  /** /metrics, /healthz, /readyz, /status (an isolate host has none: its front asks it over IPC). */
  admin?: HostPort;
  /** The address other agents and the operator reach this agent's HTTP front at (default: listen). */
  advertise?: string;
  /** NATS mode: the port other agents forward actor calls to. */
  peerListen: HostPort;
  peerAdvertise?: string;
  /**
   * NATS mode: the secret every agent of the region sends on, and requires of, peer calls
   * (at least MIN_PEER_TOKEN_LENGTH characters). Required: the agent refuses to start in
   * NATS mode without one.
   */
  peerToken?: string;
  /** The bearer token that reads the admin port's full /status (tenants' workers, actor ids); without one, /status gives counts only. */
  adminToken?: string;
  /** Egress allowances every worker gets on top of its namespace's policy (`--egress-allow`). */
  egressAllow?: readonly string[];
  /** How workers' fetch() looks names up (default: the system resolver); a seam for tests. */
  resolve?: Resolver;
  presenceTtlMs: number;
  /** How to reach a model server's Service; {service}, {namespace}, {port} and {binding} are substituted. */
  aiUrlTemplate?: string;
  actorLogReplicas: number;
  /** A SQLite-backed actor's log is snapshotted after this many statements (default SQL_SNAPSHOT_LOG_ENTRIES). */
  sqlSnapshotEntries?: number;
  maxBodyBytes: number;
  maxWebSocketMessageBytes: number;
  poolSize: number;
  maxIsolatesPerWorker?: number;
  /** Idle isolates of a worker above its minWarmIsolates (all of them outside its shard) are disposed after this long (default 60 s). */
  idleIsolateMs?: number;
  /** Worker Loader get()'s kept warm per process: at most this many, holding at most this much heap (serving/dynamic-workers.ts defaults). */
  dynamicCache?: { maxEntries?: number; maxBytes?: number; callerShare?: number };
  /** Peers whose CF-Connecting-IP / X-Forwarded-* are believed: CIDRs, addresses or "unix" (default none). */
  trustedProxies?: string[];
  /** `edge dev` only: uncaught exceptions answered with their stack, "not placed in this region" 404s (WorkerServerOptions.devErrorPages). */
  devErrorPages?: boolean;
  /**
   * Run tenants' isolates in this many isolate-host processes, this process being only the
   * front (docs/isolate-hosts.md); 0 or absent: in this process. `edge agent` (cli/agent.ts) picks.
   */
  isolateHosts?: number;
  /**
   * Pre-booted spare host processes kept at all times, so a crashed host is replaced by a
   * promotion (default 0: one is kept only for 10 minutes after a crash; hosts/supervisor.ts).
   */
  isolateHostSpares?: number;
  /** argv that starts an isolate-host process (`edge isolate-host`), the executable first. */
  isolateHostCommand?: readonly string[];
  /**
   * With isolate hosts: a cordon host for tenants over their share of the CPU or that keep
   * hitting their limits, at the lowest CPU priority (hosts/cordon.ts; default true).
   */
  isolateHostCordon?: boolean;
  /** With isolate hosts: pin host i to one CPU (hosts/cpu-affinity.ts; default auto). */
  pinHosts?: PinHosts;
  /**
   * Drain (SIGTERM): how long /readyz says 503 while everything is still served, before
   * actors are handed over and listeners closed: the time load balancers and Kubernetes
   * endpoints take to stop sending here (default DEFAULT_DRAIN_DELAY_MS).
   */
  drainDelayMs?: number;
  /**
   * Drain: the bound on what follows the delay (actors handed over, requests in flight
   * answered; default DEFAULT_DRAIN_TIMEOUT_MS). Past it, what still runs is cut: its
   * connection closes, and an actor not yet released is left to the next owner's claim.
   */
  drainTimeoutMs?: number;
  /** Set in an isolate-host process: which agent it belongs to and its share of namespaces. */
  isolateHost?: HostShare & { of: string };
  /**
   * Workers' shards (docs/shards.md; NATS mode): on unless `enabled` is false (`--shards
   * off`: every host serves every worker); min/max the default range of a worker without
   * spec.placement.shard; targetConcurrency the in-flight requests per member a shard aims at.
   */
  shards?: { enabled?: boolean; min?: number; max?: number; targetConcurrency?: number; connectTimeoutMs?: number };
}

/** What `edge agent` runs: an Agent, or an AgentFront with its isolate hosts. */
export interface RunningAgent {
  /** The public HTTP port. */
  readonly port: number;
  readonly adminPort: number | undefined;
  drain(): Promise<void>;
  stop(): Promise<void>;
}

/** See AgentConfig.drainDelayMs: about Kubernetes' endpoint propagation plus a probe period. */
export const DEFAULT_DRAIN_DELAY_MS = 5_000;
/** See AgentConfig.drainTimeoutMs; the chart's terminationGracePeriodSeconds covers delay + timeout. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 20_000;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves with `p`, or with `undefined` once `ms` passed (`p` runs on). */
export async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((r) => { timer = setTimeout(() => r(undefined), Math.max(0, ms)); })]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs a start's steps; each step that started something pushes its undo. When a later step
 * fails, what started is undone in reverse, so a failed start leaves no port, connection or
 * timer behind, and the start's own error is what the caller sees.
 */
export async function startOrUndo<T>(steps: (undo: (() => unknown)[]) => Promise<T>): Promise<T> {
  const undo: (() => unknown)[] = [];
  try {
    return await steps(undo);
  } catch (err) {
    for (const step of undo.reverse()) {
      try { await step(); } catch { /* best effort: the start error is the one to report */ }
    }
    throw err;
  }
}

/** A drain's clock: the bound on what follows the delay, shared by drain() and stop(). */
export class DrainClock {
  private deadline: number | undefined;
  constructor(private readonly timeoutMs: number) {}
  start(): void { this.deadline ??= performance.now() + this.timeoutMs; }
  /** Time left until the bound; none when no drain ran (a plain stop cuts at once). */
  left(): number { return this.deadline === undefined ? 0 : Math.max(0, this.deadline - performance.now()); }
}

/** What an isolate host is started with: the agent's config less what cannot cross IPC. */
export type IsolateHostConfig = Omit<AgentConfig, 'log'>;

/** The peer port of host `index`: the agent's peer port + 1 + index (a range the chart opens), or any free one. */
export function hostPeer(cfg: AgentConfig, index: number): { peerListen: HostPort; peerAdvertise?: string } {
  const base = cfg.peerListen;
  if (base.port === 0) return { peerListen: base };
  const port = base.port + 1 + index;
  let peerAdvertise: string | undefined;
  if (cfg.peerAdvertise) {
    const u = new URL(cfg.peerAdvertise);
    u.port = String(port);
    peerAdvertise = u.href.replace(/\/$/, '');
  }
  return { peerListen: { host: base.host, port }, ...(peerAdvertise ? { peerAdvertise } : {}) };
}
