import { POOL_GPU, POOL_ISOLATE, POOL_LABEL, REGION_LABEL } from '../../common/labels.js';

// Which regions exist, from Node labels, and where a worker goes. Pure: the reconciler
// feeds it the Node cache and the spec.

export interface NodeInfo {
  name: string;
  labels: Record<string, string>;
  unschedulable?: boolean;
}

export interface RegionNodes {
  /** Nodes of the isolate pool: each runs a node agent. */
  isolate: string[];
  gpu: string[];
}

export function regionsOf(nodes: NodeInfo[]): Map<string, RegionNodes> {
  const out = new Map<string, RegionNodes>();
  for (const n of nodes) {
    const region = n.labels[REGION_LABEL];
    if (!region) continue;
    let r = out.get(region);
    if (!r) { r = { isolate: [], gpu: [] }; out.set(region, r); }
    const pool = n.labels[POOL_LABEL];
    if (pool === POOL_ISOLATE) r.isolate.push(n.name);
    else if (pool === POOL_GPU) r.gpu.push(n.name);
  }
  for (const r of out.values()) { r.isolate.sort(); r.gpu.sort(); }
  return out;
}

export interface Placement {
  /** Regions the worker runs in: requested (or all) and having isolate nodes. Sorted. */
  placed: string[];
  /** Requested regions with no isolate node: reported, never silently dropped. */
  missing: string[];
  /** Placed regions with no GPU node while the worker has AI bindings. */
  missingGpu: string[];
  /** Isolate nodes per placed region: the agents that should serve the worker. */
  desiredAgents: Record<string, number>;
}

export function place(requested: string[] | undefined, regions: Map<string, RegionNodes>, needsGpu: boolean): Placement {
  const candidates = requested ? [...new Set(requested)] : [...regions.keys()].filter((r) => (regions.get(r)?.isolate.length ?? 0) > 0);
  const placed: string[] = [];
  const missing: string[] = [];
  const missingGpu: string[] = [];
  const desiredAgents: Record<string, number> = {};
  for (const r of candidates.sort()) {
    const nodes = regions.get(r);
    if (!nodes || nodes.isolate.length === 0) { missing.push(r); continue; }
    placed.push(r);
    desiredAgents[r] = nodes.isolate.length;
    if (needsGpu && nodes.gpu.length === 0) missingGpu.push(r);
  }
  return { placed, missing, missingGpu, desiredAgents };
}

/** The REGIONS column: the spec's regions joined, or "all" for a spec naming none (every region with isolate nodes). */
export const regionsColumn = (regions: readonly string[] | undefined): string =>
  regions && regions.length > 0 ? regions.join(',') : 'all';
