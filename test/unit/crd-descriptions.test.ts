import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { DURABLE_ACTOR, EDGE_WORKER, EdgeWorkerSpecSchema, RESOURCE_KINDS, buildCrd, type ResourceKind } from '../../common/api/index.js';
import { regionsColumn } from '../../operator/controllers/placement.js';

// `kubectl explain` prints a CRD field's description; every field of every kind has one,
// numbers with their unit. A new zod field without .describe() fails here.

interface Schema {
  description?: string;
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: Schema | boolean;
}

/** Every field path of the schema ("spec.limits.memoryMiB", "spec.routes[].host") with its description. */
function fields(s: Schema, path = ''): { path: string; description: string | undefined }[] {
  const out: { path: string; description: string | undefined }[] = [];
  if (path) out.push({ path, description: s.description });
  for (const [k, v] of Object.entries(s.properties ?? {})) out.push(...fields(v, path ? `${path}.${k}` : k));
  if (s.items) out.push(...fields(s.items, `${path}[]`));
  if (typeof s.additionalProperties === 'object') out.push(...fields(s.additionalProperties, `${path}{}`));
  return out;
}

/** Fields without a description; metadata is ObjectMeta: the apiserver refuses a description there and explains its own. */
const undescribed = (s: Schema): string[] => fields(s).filter((f) => f.path !== 'metadata' && !f.description?.trim()).map((f) => f.path);

const schemaOf = (r: ResourceKind): Schema => {
  const crd = buildCrd(r) as unknown as { spec: { versions: { schema: { openAPIV3Schema: Schema } }[] } };
  return crd.spec.versions[0]!.schema.openAPIV3Schema;
};

describe('CRD descriptions (kubectl explain)', () => {
  for (const r of RESOURCE_KINDS) {
    it(`describes every ${r.kind} field`, () => {
      expect(fields(schemaOf(r)).length).toBeGreaterThan(15);
      expect(undescribed(schemaOf(r))).toEqual([]);
    });
  }

  it('fails on an undescribed field: a zod field without .describe(), in a list or a map too', () => {
    const spec = EdgeWorkerSpecSchema.extend({
      extra: z.number().int(),
      list: z.array(z.object({ inner: z.string() })).describe('x'),
      map: z.record(z.string(), z.object({ deep: z.boolean() }).describe('x')).describe('x'),
    });
    expect(undescribed(schemaOf({ ...EDGE_WORKER, spec }))).toEqual(['spec', 'spec.extra', 'spec.list[]', 'spec.list[].inner', 'spec.map{}.deep']);
  });

  it('gives every number its unit', () => {
    const desc = (r: typeof EDGE_WORKER | typeof DURABLE_ACTOR, path: string) => fields(schemaOf(r)).find((f) => f.path === path)?.description;
    expect(desc(EDGE_WORKER, 'spec.limits.cpuMsPerRequest')).toMatch(/milliseconds/);
    expect(desc(EDGE_WORKER, 'spec.limits.wallMsPerRequest')).toMatch(/milliseconds/);
    expect(desc(EDGE_WORKER, 'spec.limits.memoryMiB')).toMatch(/MiB/);
    expect(desc(EDGE_WORKER, 'spec.limits.subrequests')).toMatch(/count/);
    expect(desc(EDGE_WORKER, 'spec.placement.minWarmIsolates')).toMatch(/per agent/);
    expect(desc(DURABLE_ACTOR, 'spec.idleTimeoutSeconds')).toMatch(/^Seconds/);
    expect(desc(DURABLE_ACTOR, 'spec.storage.maxBytesPerActor')).toMatch(/bytes/);
  });
});

describe('printer columns (kubectl get)', () => {
  const columns = (r: typeof EDGE_WORKER | typeof DURABLE_ACTOR) => r.columns.filter((c) => !c.priority).map((c) => `${c.name} ${c.jsonPath}`);

  it('EdgeWorker: Ready, Reason (of the Ready condition), Regions as text, Age', () => {
    expect(columns(EDGE_WORKER)).toEqual([
      'Ready .status.conditions[?(@.type=="Ready")].status',
      'Reason .status.conditions[?(@.type=="Ready")].reason',
      'Regions .status.regionsText',
      'Age .metadata.creationTimestamp',
    ]);
  });

  it('DurableActor: Ready, Reason, Region, Age', () => {
    expect(columns(DURABLE_ACTOR).map((c) => c.split(' ')[0])).toEqual(['Ready', 'Reason', 'Region', 'Age']);
  });

  it('writes the spec\'s regions as text, and "all" for a spec naming none (every region with isolate nodes)', () => {
    expect(regionsColumn(['eu-west', 'us-east'])).toBe('eu-west,us-east');
    expect(regionsColumn([])).toBe('all');
    expect(regionsColumn(undefined)).toBe('all');
  });
});
