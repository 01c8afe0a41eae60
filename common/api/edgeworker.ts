import { z } from 'zod';
import {
  API_VERSION, ObjectMetaSchema, cel, type CelRule, conditionList, dataKey, dnsLabel, dnsSubdomain, jsIdentifier, regionName,
} from './meta.js';

// The EdgeWorker API. These schemas are the single source of truth: crds/ is generated from
// them (scripts/gen-crds.ts) and the operator parses every CR it reads with them.

/** Largest inline source; bigger bundles go in a ConfigMap (etcd caps one object near 1.5 MiB). */
export const MAX_INLINE_SOURCE_BYTES = 1_000_000;

export const SourceSchema = z
  .object({
    inline: z.string().min(1).max(MAX_INLINE_SOURCE_BYTES).optional()
      .describe('The worker as an ES module, `export default { fetch(request, env, ctx) }`.'),
    configMapRef: z.object({
      name: dnsSubdomain().describe('A ConfigMap in the EdgeWorker\'s namespace.'),
      key: dataKey().describe('The key of that ConfigMap holding the module.'),
    }).optional(),
  })
  .meta(cel({
    rule: 'has(self.inline) != has(self.configMapRef)',
    message: 'exactly one of spec.source.inline or spec.source.configMapRef must be set',
  }));

const HOST_PATTERN = /^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export const RouteSchema = z.object({
  host: z.string().min(1).max(253).regex(HOST_PATTERN)
    .describe('Host header to match, lower case, no port; a leading "*." matches any subdomain.'),
  pathPrefix: z.string().max(1024).regex(/^\/[^\s?#]*$/).default('/')
    .describe('Path prefix to match; the longest matching prefix wins.'),
});

export const PlacementSchema = z.object({
  regions: z.array(regionName()).max(64).optional()
    .meta({ 'x-kubernetes-list-type': 'set' })
    .describe('Regions to run in; omitted means every region with isolate nodes.'),
  minWarmIsolates: z.number().int().min(0).max(64).default(1)
    .describe('Isolates per agent kept compiled and ready so no request waits for a cold start.'),
});

export const LimitsSchema = z
  .object({
    cpuMsPerRequest: z.number().int().min(1).max(30_000).default(50),
    memoryMiB: z.number().int().min(16).max(2048).default(128),
    subrequests: z.number().int().min(0).max(10_000).default(50),
    wallMsPerRequest: z.number().int().min(1).max(900_000).default(30_000),
  })
  .meta(cel({
    rule: 'self.wallMsPerRequest >= self.cpuMsPerRequest',
    message: 'spec.limits.wallMsPerRequest must be at least spec.limits.cpuMsPerRequest',
    fieldPath: '.wallMsPerRequest',
  }));

export const SecretBindingSchema = z.object({
  name: jsIdentifier().describe('Exposed as env.<name>.'),
  secretKeyRef: z.object({ name: dnsSubdomain(), key: dataKey() }),
});

export const ActorBindingSchema = z.object({
  name: jsIdentifier().describe('Exposed as env.<name>, a Durable Object namespace.'),
  actor: dnsLabel().describe('A DurableActor in the EdgeWorker\'s namespace.'),
});

export const AiBindingSchema = z.object({
  name: jsIdentifier().describe('Exposed as env.<name> with run(model, input).'),
  model: z.string().min(1).max(256).regex(/^[A-Za-z0-9][A-Za-z0-9._:/@-]*$/),
  image: z.string().min(1).max(512).optional()
    .describe('Model server image speaking the OpenAI-compatible API; the chart sets a default.'),
  gpus: z.number().int().min(0).max(8).default(1),
  replicasPerRegion: z.number().int().min(1).max(16).default(1),
});

const MAX_VARS = 64;
export const BindingsSchema = z
  .object({
    vars: z.record(z.string(), z.string().max(65_536)).optional()
      .meta({
        maxProperties: MAX_VARS,
        ...cel({
          rule: "self.all(k, k.matches('^[A-Za-z_$][A-Za-z0-9_$]*$'))",
          message: 'spec.bindings.vars keys must be JavaScript identifiers (they become env.<name>)',
        }),
      }),
    secrets: z.array(SecretBindingSchema).max(64).optional()
      .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] }),
    actors: z.array(ActorBindingSchema).max(32).optional()
      .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] }),
    ai: z.array(AiBindingSchema).max(8).optional()
      .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] }),
  })
  // env is one namespace: the same name in two binding kinds would shadow one of them.
  // (CEL in CRDs has no cel.bind here, so one rule per pair of kinds.)
  .meta(cel(...uniqueAcrossKinds()));

function uniqueAcrossKinds(): CelRule[] {
  const lists = ['secrets', 'actors', 'ai'] as const;
  const rules: CelRule[] = lists.map((l) => ({
    rule: `!has(self.vars) || !has(self.${l}) || self.${l}.all(b, !(b.name in self.vars))`,
    message: `spec.bindings.${l}: a name is also used in spec.bindings.vars; binding names must be unique across kinds`,
    fieldPath: `.${l}`,
  }));
  lists.forEach((a, i) => {
    for (const b of lists.slice(i + 1)) {
      rules.push({
        rule: `!has(self.${a}) || !has(self.${b}) || self.${b}.all(x, !self.${a}.exists(y, y.name == x.name))`,
        message: `spec.bindings.${b}: a name is also used in spec.bindings.${a}; binding names must be unique across kinds`,
        fieldPath: `.${b}`,
      });
    }
  });
  return rules;
}

export const EdgeWorkerSpecSchema = z.object({
  source: SourceSchema,
  compatibilityDate: z.string().regex(/^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/).optional()
    .describe('Workers compatibility date, YYYY-MM-DD.'),
  routes: z.array(RouteSchema).max(64).optional()
    .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['host', 'pathPrefix'] }),
  placement: PlacementSchema.default({ minWarmIsolates: 1 }),
  limits: LimitsSchema.default({ cpuMsPerRequest: 50, memoryMiB: 128, subrequests: 50, wallMsPerRequest: 30_000 }),
  bindings: BindingsSchema.optional(),
});

export const RegionStatusSchema = z.object({
  name: regionName(),
  desiredAgents: z.number().int().min(0),
  readyAgents: z.number().int().min(0),
});

export const EdgeWorkerStatusSchema = z.object({
  observedGeneration: z.number().int().min(0).optional(),
  bundleDigest: z.string().regex(/^sha256:[a-f0-9]{64}$/).optional(),
  conditions: conditionList().optional(),
  regions: z.array(RegionStatusSchema).max(64).optional()
    .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] }),
});

export const EdgeWorkerSchema = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal('EdgeWorker'),
  metadata: ObjectMetaSchema,
  spec: EdgeWorkerSpecSchema,
  status: EdgeWorkerStatusSchema.optional(),
});

export type EdgeWorkerSpec = z.infer<typeof EdgeWorkerSpecSchema>;
export type EdgeWorkerStatus = z.infer<typeof EdgeWorkerStatusSchema>;
export type EdgeWorker = z.infer<typeof EdgeWorkerSchema>;
export type Route = z.infer<typeof RouteSchema>;
export type Limits = z.infer<typeof LimitsSchema>;
export type AiBinding = z.infer<typeof AiBindingSchema>;
