import * as z from 'zod';
import {
  API_VERSION, ObjectMetaSchema, cel, type CelRule, conditionList, dataKey, dnsLabel, dnsSubdomain, jsIdentifier, modelId, observedGeneration, regionName,
} from './meta.js';

// The EdgeWorker API. These schemas are the single source of truth: crds/ is generated from
// them (scripts/gen-crds.ts) and the operator parses every CR it reads with them.

/** Largest inline source; bigger bundles go in a ConfigMap (etcd caps one object near 1.5 MiB). */
export const MAX_INLINE_SOURCE_BYTES = 1_000_000;
/**
 * Largest module source from a ConfigMap, after a `.gz` key is decompressed (`edge deploy`
 * stores bundles over MAX_INLINE_SOURCE_BYTES gzip-compressed in binaryData): the bound that
 * keeps a gzip bomb in a ConfigMap from taking the operator's memory.
 */
export const MAX_SOURCE_BYTES = 16 * 1024 * 1024;

export const SourceSchema = z
  .object({
    inline: z.string().min(1).max(MAX_INLINE_SOURCE_BYTES).optional()
      .describe('The worker as an ES module, `export default { fetch(request, env, ctx) }`.'),
    configMapRef: z.object({
      name: dnsSubdomain().describe('A ConfigMap in the EdgeWorker\'s namespace.'),
      key: dataKey().describe('The key of that ConfigMap holding the module.'),
    }).optional()
      .describe('A ConfigMap key holding the module (edge deploy puts bundles over 1 MB there, gzip-compressed under a .gz key, at most 16 MiB decompressed).'),
  })
  .describe('The worker\'s code: exactly one of inline or configMapRef.')
  .meta(cel({
    rule: 'has(self.inline) != has(self.configMapRef)',
    message: 'exactly one of spec.source.inline or spec.source.configMapRef must be set',
  }));

export const HOST_PATTERN = /^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/**
 * A wildcard that would catch a whole top-level domain (`*.com`, `*.localhost`): a wildcard
 * needs at least two labels after `*.`. The CRD refuses new ones (CEL); the operator refuses
 * old objects' (the zod pattern stays lax so such an object still parses and can be deleted).
 */
export const isBareTldWildcard = (host: string): boolean => host.startsWith('*.') && !host.slice(2).includes('.');

export const RouteSchema = z.object({
  host: z.string().min(1).max(253).regex(HOST_PATTERN)
    .describe('Host header to match, lower case, no port; a leading "*." matches any subdomain (at least two labels after it).'),
  pathPrefix: z.string().max(1024).regex(/^\/[^\s?#]*$/).default('/')
    .describe('Path prefix to match; the longest matching prefix wins.'),
})
  .describe('A host and path prefix whose requests this worker serves.').meta(cel({
  rule: "!self.host.startsWith('*.') || self.host.matches('^[*][.][^.]+[.][^.]+')",
  message: 'spec.routes[].host: a wildcard needs at least two labels after "*." ("*.example.com", not "*.com")',
  fieldPath: '.host',
}));

export const PlacementSchema = z.object({
  regions: z.array(regionName()).max(64).optional()
    .meta({ 'x-kubernetes-list-type': 'set' })
    .describe('Regions to run in; omitted means every region with isolate nodes.'),
  // No default: unset means the cluster admin's default (EdgePolicy), resolved by the operator.
  minWarmIsolates: z.number().int().min(0).max(64).optional()
    .describe('Isolates per agent kept compiled and ready so no request waits for a cold start; unset: the EdgePolicy default (1 without one).'),
  shard: z.object({
    min: z.number().int().min(0).max(64)
      .describe('Fewest agents of a region that keep this worker warm; the others forward its requests to them. 0 turns sharding off for this worker: every agent serves it, as without shards.'),
    max: z.number().int().min(1).max(1024)
      .describe('Most agents of a region the shard grows to as the worker\'s load grows (at least min).'),
  }).optional()
    .describe('The worker\'s shard per region (docs/shards.md): the agents, picked on a consistent-hash ring, that keep it warm; unset: the agents\' default (--shard-min 2, --shard-max 8).'),
})
  .describe('Where the worker runs: which regions, and how many agents and isolates keep it warm there.');

/** The built-in limits: what a worker gets when neither its spec nor an EdgePolicy sets one. */
export const BUILTIN_LIMIT_DEFAULTS = { cpuMsPerRequest: 50, memoryMiB: 128, subrequests: 50, wallMsPerRequest: 30_000, minWarmIsolates: 1 } as const;
/** The schema's own bounds: the ceilings when no EdgePolicy sets lower ones. */
export const LIMIT_BOUNDS = {
  cpuMsPerRequest: { min: 1, max: 30_000 },
  memoryMiB: { min: 16, max: 2048 },
  subrequests: { min: 0, max: 10_000 },
  wallMsPerRequest: { min: 1, max: 900_000 },
  minWarmIsolates: { min: 0, max: 64 },
} as const;
export type LimitField = keyof typeof LIMIT_BOUNDS;
export const LIMIT_FIELDS = Object.keys(LIMIT_BOUNDS) as LimitField[];
/** What each limit means, with its unit: the CRDs' descriptions (kubectl explain). */
export const LIMIT_DESCRIPTIONS: Record<LimitField, string> = {
  cpuMsPerRequest: `CPU time one request may use, in milliseconds (${LIMIT_BOUNDS.cpuMsPerRequest.min}-${LIMIT_BOUNDS.cpuMsPerRequest.max}); past it the isolate is disposed and the request gets a 503 naming the limit. Built-in default ${BUILTIN_LIMIT_DEFAULTS.cpuMsPerRequest}.`,
  memoryMiB: `Heap of one isolate, in MiB (${LIMIT_BOUNDS.memoryMiB.min}-${LIMIT_BOUNDS.memoryMiB.max}); past it V8 disposes the isolate and the request gets a 503 naming the limit; WebAssembly memory counts against it. Built-in default ${BUILTIN_LIMIT_DEFAULTS.memoryMiB}.`,
  subrequests: `fetch() calls and binding calls one request may make, a count (${LIMIT_BOUNDS.subrequests.min}-${LIMIT_BOUNDS.subrequests.max}); one more throws in the worker. Built-in default ${BUILTIN_LIMIT_DEFAULTS.subrequests}.`,
  wallMsPerRequest: `Wall-clock time one request may take, in milliseconds (${LIMIT_BOUNDS.wallMsPerRequest.min}-${LIMIT_BOUNDS.wallMsPerRequest.max}), waiting on I/O included, at least cpuMsPerRequest; past it the isolate is disposed and the request gets a 504. Built-in default ${BUILTIN_LIMIT_DEFAULTS.wallMsPerRequest}.`,
  minWarmIsolates: `Isolates per agent kept compiled and ready, a count (${LIMIT_BOUNDS.minWarmIsolates.min}-${LIMIT_BOUNDS.minWarmIsolates.max}). Built-in default ${BUILTIN_LIMIT_DEFAULTS.minWarmIsolates}.`,
};
export const limitField = (f: LimitField) => z.number().int().min(LIMIT_BOUNDS[f].min).max(LIMIT_BOUNDS[f].max).describe(LIMIT_DESCRIPTIONS[f]);

/**
 * Resolved limits, as the operator publishes them (WorkerConfig.limits) and the isolates
 * enforce them: every field set.
 */
export const LimitsSchema = z.object({
  cpuMsPerRequest: limitField('cpuMsPerRequest').default(BUILTIN_LIMIT_DEFAULTS.cpuMsPerRequest),
  memoryMiB: limitField('memoryMiB').default(BUILTIN_LIMIT_DEFAULTS.memoryMiB),
  subrequests: limitField('subrequests').default(BUILTIN_LIMIT_DEFAULTS.subrequests),
  wallMsPerRequest: limitField('wallMsPerRequest').default(BUILTIN_LIMIT_DEFAULTS.wallMsPerRequest),
});

/**
 * spec.limits: what the tenant asks for. No defaults in the CRD, so the operator can tell
 * "unset" (the EdgePolicy's default applies) from a value; objects written while the CRD
 * still had defaults keep theirs as explicit values.
 */
export const LimitsSpecSchema = z
  .object({
    cpuMsPerRequest: limitField('cpuMsPerRequest').optional(),
    memoryMiB: limitField('memoryMiB').optional(),
    subrequests: limitField('subrequests').optional(),
    wallMsPerRequest: limitField('wallMsPerRequest').optional(),
  })
  .meta(cel({
    rule: '!has(self.wallMsPerRequest) || !has(self.cpuMsPerRequest) || self.wallMsPerRequest >= self.cpuMsPerRequest',
    message: 'spec.limits.wallMsPerRequest must be at least spec.limits.cpuMsPerRequest',
    fieldPath: '.wallMsPerRequest',
  }));

export const SecretBindingSchema = z.object({
  name: jsIdentifier().describe('Exposed as env.<name>, a string.'),
  secretKeyRef: z.object({
    name: dnsSubdomain().describe('A Secret in the EdgeWorker\'s namespace (read by name, never listed).'),
    key: dataKey().describe('The key of that Secret whose value env.<name> holds.'),
  }).describe('Where the value is: a key of a Secret in the EdgeWorker\'s namespace.'),
}).describe('A Secret value the worker reads as env.<name> (wrangler\'s secrets).');

export const ActorBindingSchema = z.object({
  name: jsIdentifier().describe('Exposed as env.<name>, a Durable Object namespace.'),
  actor: dnsLabel().describe('A DurableActor in the EdgeWorker\'s namespace.'),
}).describe('A DurableActor class the worker reaches as env.<name> (wrangler\'s durable_objects bindings).');

export const ServiceBindingSchema = z.object({
  name: jsIdentifier().describe('Exposed as env.<name>: fetch() and RPC methods of the bound worker.'),
  worker: dnsLabel().describe('An EdgeWorker in the same namespace (a name, never another namespace\'s worker).'),
  entrypoint: jsIdentifier().optional()
    .describe('A named export of the bound worker extending WorkerEntrypoint; omitted: its default export.'),
}).describe('Another EdgeWorker the worker calls as env.<name> (wrangler\'s services).');

export const WorkerLoaderBindingSchema = z.object({
  name: jsIdentifier().describe('Exposed as env.<name>, a Worker Loader: load(code) and get(id, callback) run code handed over at run time in a sandboxed dynamic worker on the same agent (docs/dynamic-workers.md).'),
}).describe('A Worker Loader binding (wrangler\'s worker_loaders).');

export const AiBindingSchema = z.object({
  name: jsIdentifier().describe('Exposed as env.<name> with run(model, input).'),
  model: modelId().describe('A model of the cluster\'s catalogue (an EdgeModel\'s spec.model) that env.<name>.run() may call.'),
  models: z.array(modelId().describe('A catalogue model id.')).max(16).optional()
    .meta({ 'x-kubernetes-list-type': 'set' })
    .describe('More catalogue models env.<name>.run() may call (embeddings, images, other LLMs); each gets its own model server in each region, counted against the GPU quota.'),
  image: z.string().min(1).max(512).optional()
    .describe('Deprecated: the catalogue\'s EdgeModel decides the image; a value other than its image is refused.'),
  gpus: z.number().int().min(0).max(8).optional()
    .describe('Deprecated and ignored: the catalogue\'s EdgeModel decides the GPUs of each replica.'),
  replicasPerRegion: z.number().int().min(1).max(16).default(1)
    .describe('Model server replicas (pods) per placed region, a count; each holds the model\'s GPUs.'),
}).describe('A Workers AI binding: env.<name>.run(model, input) calls the cluster\'s model servers in the worker\'s region.');

const MAX_VARS = 64;
export const BindingsSchema = z
  .object({
    vars: z.record(z.string(), z.string().max(65_536).describe('A plain-text value, at most 65536 characters.')).optional()
      .describe('Plain-text values, each exposed as env.<key> (wrangler\'s vars); at most 64 keys, each a JavaScript identifier.')
      .meta({
        maxProperties: MAX_VARS,
        ...cel({
          rule: "self.all(k, k.matches('^[A-Za-z_$][A-Za-z0-9_$]*$'))",
          message: 'spec.bindings.vars keys must be JavaScript identifiers (they become env.<name>)',
        }),
      }),
    secrets: z.array(SecretBindingSchema).max(64).optional()
      .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] })
      .describe('Secret values, each exposed as env.<name> (at most 64); the operator seals them before they leave the apiserver.'),
    actors: z.array(ActorBindingSchema).max(32).optional()
      .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] })
      .describe('Durable Object namespaces, each exposed as env.<name> (at most 32).'),
    ai: z.array(AiBindingSchema).max(8).optional()
      .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] })
      .describe('Workers AI bindings, each exposed as env.<name> (at most 8); each model gets a model server per placed region.'),
    services: z.array(ServiceBindingSchema).max(32).optional()
      .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] })
      .describe('Service bindings to other EdgeWorkers of this namespace, each exposed as env.<name> (at most 32).'),
    workerLoaders: z.array(WorkerLoaderBindingSchema).max(8).optional()
      .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] })
      .describe('Worker Loader bindings (wrangler\'s worker_loaders): each is env.<name> with load(code) and get(id, callback), running dynamic workers whose only reach is what the caller passes in their env.'),
  })
  // env is one namespace: the same name in two binding kinds would shadow one of them.
  // (CEL in CRDs has no cel.bind here, so one rule per pair of kinds.)
  .meta(cel(...uniqueAcrossKinds()))
  .describe('What the worker\'s env holds, as wrangler\'s bindings; a name is used once across all kinds.');

function uniqueAcrossKinds(): CelRule[] {
  const lists = ['secrets', 'actors', 'ai', 'services', 'workerLoaders'] as const;
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

/** The compatibility flags the runtime knows; any other is refused by the apiserver (the CRD's enum). */
export const COMPATIBILITY_FLAGS = ['nodejs_compat'] as const;
export type CompatibilityFlag = (typeof COMPATIBILITY_FLAGS)[number];

export const EdgeWorkerSpecSchema = z.object({
  source: SourceSchema,
  compatibilityDate: z.string().regex(/^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/).optional()
    .describe('Workers compatibility date, YYYY-MM-DD.'),
  compatibilityFlags: z.array(z.enum(COMPATIBILITY_FLAGS).describe('A compatibility flag.')).max(16).optional()
    .meta({ 'x-kubernetes-list-type': 'set' })
    .describe('Workers compatibility flags this runtime honours: nodejs_compat (the Node built-in modules and the Buffer and process globals).'),
  routes: z.array(RouteSchema).max(64).optional()
    .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['host', 'pathPrefix'] })
    .describe('Hosts and path prefixes this worker serves on every agent it is placed on (at most 64); a host another worker claimed first, or one the EdgePolicy does not grant, is refused (Ready=False).'),
  placement: PlacementSchema.default({}),
  limits: LimitsSpecSchema.optional()
    .describe('Per-request limits; an unset field gets the EdgePolicy default, and none may exceed its maximum.'),
  bindings: BindingsSchema.optional(),
}).describe('The worker: its code, routes, placement, limits and bindings.');

export const RegionStatusSchema = z.object({
  name: regionName(),
  desiredAgents: z.number().int().min(0).describe('Agents of this region that should serve the worker, a count.'),
  readyAgents: z.number().int().min(0).describe('Agents of this region serving the current version, a count.'),
  shard: z.array(z.string().describe('An agent\'s name.')).max(1024).optional()
    .describe('The agents of this region in the worker\'s shard now, keeping it warm (docs/shards.md); absent when no agent reports one.'),
}).describe('One placed region: how many agents should serve the worker there and how many do.');

export const EdgeWorkerStatusSchema = z.object({
  observedGeneration: observedGeneration(),
  bundleDigest: z.string().regex(/^sha256:[a-f0-9]{64}$/).optional()
    .describe('sha256 of the bundle the agents run (kubectl get -o wide prints it as DIGEST).'),
  conditions: conditionList().optional(),
  regions: z.array(RegionStatusSchema).max(64).optional()
    .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] })
    .describe('Each placed region and its agents.'),
  regionsText: z.string().max(1024).optional()
    .describe('spec.placement.regions as text for kubectl get\'s REGIONS column: the names joined by ",", or "all" when the spec names none.'),
}).describe('What the operator observed; written by the operator only.');

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
export type LimitsSpec = z.infer<typeof LimitsSpecSchema>;
export type AiBinding = z.infer<typeof AiBindingSchema>;
