import type { Route } from '../../common/api/index.js';
import type { WorkerDefinition } from '../isolate/worker-isolate.js';

// Where the worker server learns which workers to serve. It sees only this interface; the
// sources (a directory, the operator's NATS feed) live in control/.

export interface DesiredWorker {
  /** namespace/name */
  key: string;
  routes: Route[];
  /** Isolates kept compiled and ready (spec.placement.minWarmIsolates). */
  minWarmIsolates: number;
  /** spec.placement.shard (docs/shards.md); unset: the agent's default. min 0: every host serves it. */
  shard?: { min: number; max: number };
  def: WorkerDefinition;
}

export interface DesiredStateSource {
  /** Calls onUpdate with the whole desired set now and whenever it changes. */
  start(onUpdate: (workers: DesiredWorker[]) => void): Promise<void>;
  stop(): Promise<void>;
  /** A worker routed for host and path that is placed in other regions only: its key and those regions. */
  placedElsewhere?(host: string, path: string): { key: string; regions: string[] } | undefined;
}
