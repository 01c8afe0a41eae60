import type { Registry } from 'prom-client';
import type { NamespaceUsage, ServedRoutes, WorkerState } from '../serving/worker-server.js';

// The IPC messages between an agent's front and its isolate-host processes (the Node IPC
// channel of child_process, JSON). Both ends are the same build, started by the same
// `edge agent`, so the messages are typed rather than versioned. docs/isolate-hosts.md.

/** What the front tells a host. */
export type ToHost<Config = unknown> =
  /**
   * Become host `index` of `count`: start serving its share of namespaces on a Unix socket
   * in `socketDir`, pinned to `cpu` when it is set (hosts/cpu-affinity.ts).
   */
  | { type: 'start'; index: number; count: number; socketDir: string; config: Config; cpu?: number }
  | { type: 'status'; id: number }
  | { type: 'metrics'; id: number }
  /** The cordon (hosts/cordon.ts): to the cordon host, the namespaces it serves; to the others, the cordoned ones. */
  | { type: 'cordon'; namespaces: string[] }
  /** SIGTERM of the agent: hand actors over (Agent.drain), keep serving, answer 'drained'. */
  | { type: 'drain' }
  /** Stop and exit. */
  | { type: 'stop' };

/** A host's state, for the front's /status. */
export interface HostStatus {
  ready: boolean;
  workers: WorkerState[];
  actors: string[];
}

/** A registry's metrics as getMetricsAsJSON gives them (what AggregatorRegistry.aggregate takes). */
export type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/** What a host tells the front. */
export type FromHost =
  /** Modules loaded: ready to be told which host to be (a spare waits here). */
  | { type: 'booted' }
  /** Serving on `socketPath` (HTTP: upgrades) and `framesPath` (framed requests: serving/host-frames.ts) with these workers. */
  /** `cpu`: the CPU it pinned itself to (absent: it runs unpinned, asked to or not). */
  | { type: 'ready'; socketPath: string; framesPath: string; routes: ServedRoutes[]; cpu?: number }
  /** The served workers or their routes changed. */
  | { type: 'routes'; routes: ServedRoutes[] }
  | { type: 'status'; id: number; status: HostStatus }
  | { type: 'metrics'; id: number; metrics: MetricsJson }
  /** CPU and limit kills per namespace since the last one (at most every USAGE_REPORT_MS, none when idle). */
  | { type: 'usage'; usage: Record<string, NamespaceUsage> }
  | { type: 'drained' };

/** How often a host reports its tenants' usage: what the cordon reacts within. */
export const USAGE_REPORT_MS = 200;

const TYPES = new Set(['booted', 'ready', 'routes', 'status', 'metrics', 'usage', 'drained']);

/** A message from a host, or undefined for anything else on the channel. */
export function asFromHost(m: unknown): FromHost | undefined {
  return typeof m === 'object' && m !== null && TYPES.has((m as { type?: string }).type ?? '') ? m as FromHost : undefined;
}

const TO_HOST_TYPES = new Set(['start', 'status', 'metrics', 'cordon', 'drain', 'stop']);

export function asToHost<Config>(m: unknown): ToHost<Config> | undefined {
  return typeof m === 'object' && m !== null && TO_HOST_TYPES.has((m as { type?: string }).type ?? '') ? m as ToHost<Config> : undefined;
}
