import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { GPU_TAINT_KEY, POOL_GPU, POOL_ISOLATE, POOL_LABEL, REGION_LABEL, ZONE_LABEL } from '../../common/labels.js';
import { REPO_ROOT } from '../../cli/local/tools.js';

interface KindNode {
  role: string;
  labels?: Record<string, string>;
  kubeadmConfigPatches?: string[];
}

describe('kind-config.yaml', () => {
  const cfg = parse(readFileSync(join(REPO_ROOT, 'kind-config.yaml'), 'utf8')) as { nodes: KindNode[] };
  const workers = cfg.nodes.filter((n) => n.role === 'worker');

  it('has one control plane and six workers', () => {
    expect(cfg.nodes.filter((n) => n.role === 'control-plane')).toHaveLength(1);
    expect(workers).toHaveLength(6);
  });

  it('puts one GPU worker (tainted) and one isolate worker in each of three regions, with zones', () => {
    const regions = new Map<string, KindNode[]>();
    for (const w of workers) {
      const region = w.labels?.[REGION_LABEL];
      expect(region, 'every worker has a region label').toBeTruthy();
      expect(w.labels?.[ZONE_LABEL]).toMatch(new RegExp(`^${region}-`));
      regions.set(region!, [...(regions.get(region!) ?? []), w]);
    }
    expect([...regions.keys()].sort()).toEqual(['ap-south', 'eu-west', 'us-east']);
    for (const nodes of regions.values()) {
      const gpu = nodes.filter((n) => n.labels?.[POOL_LABEL] === POOL_GPU);
      const iso = nodes.filter((n) => n.labels?.[POOL_LABEL] === POOL_ISOLATE);
      expect(gpu).toHaveLength(1);
      expect(iso.length).toBeGreaterThanOrEqual(1);
      expect(gpu[0]!.kubeadmConfigPatches?.join('\n')).toContain(`key: ${GPU_TAINT_KEY}`);
      for (const n of iso) expect(n.kubeadmConfigPatches ?? []).toEqual([]);
    }
  });
});
