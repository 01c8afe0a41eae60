import * as z from 'zod';
import { API_VERSION, DNS_LABEL_PATTERN, ObjectMetaSchema, cel, conditionList, modelId, observedGeneration } from './meta.js';
import { HOST_PATTERN, LIMIT_FIELDS, limitField, type LimitField } from './edgeworker.js';
import { EgressPolicySchema } from './policy.js';

// What the cluster admin decides for tenants, as two cluster-scoped kinds (tenants, who hold
// namespaced rights only, cannot write either):
//
// - EdgePolicy, in the manner of LimitRange and ResourceQuota: per namespace, the default and
//   the ceiling of every limit, the hosts its workers may claim, the egress policy, the GPU
//   quota and the catalogue models it may use. The policy naming a namespace wins over the
//   one for "*" (the chart creates that one from its values).
// - EdgeModel, in the manner of KServe's ClusterServingRuntime: one model server the cluster
//   offers (model id -> image, GPUs per replica, extra args). An `ai` binding names a model;
//   only the catalogue decides what runs on the GPU nodes.

/** The namespace pattern of the default EdgePolicy: every namespace no other policy names. */
export const ALL_NAMESPACES = '*';
const NAMESPACE_OR_ALL = new RegExp(`^\\*$|${DNS_LABEL_PATTERN}`);

const limitShape = <T>(make: (f: LimitField) => T) =>
  Object.fromEntries(LIMIT_FIELDS.map((f) => [f, make(f)])) as Record<LimitField, T>;

/** Limit values of a policy: every field optional (an unset one falls back to the built-in value). */
export const PolicyLimitValuesSchema = z.object(limitShape((f) => limitField(f).optional()));
export type PolicyLimitValues = z.infer<typeof PolicyLimitValuesSchema>;

/** A host a namespace may claim: a host name, or `*.domain` for every name under domain (two labels at least). */
export const HostGrantSchema = z.string().min(1).max(253).regex(HOST_PATTERN)
  .describe('A host name, or *.domain for every name under it.')
  .meta(cel({
    rule: "!self.startsWith('*.') || self.matches('^[*][.][^.]+[.][^.]+')",
    message: 'a host pattern wildcard needs at least two labels after "*."',
  }));

export const EdgePolicySpecSchema = z.object({
  // One pattern, not a union: a structural schema allows no anyOf with types.
  namespaces: z.array(z.string().min(1).max(63).regex(NAMESPACE_OR_ALL).describe('A namespace name, or "*".')).min(1).max(1024)
    .meta({ 'x-kubernetes-list-type': 'set' })
    .describe('Namespaces this policy governs; "*" makes it the default for every namespace no other policy names.'),
  limits: z.object({
    defaults: PolicyLimitValuesSchema.optional()
      .describe('What a worker gets for a limit its spec leaves unset.'),
    max: PolicyLimitValuesSchema.optional()
      .describe('Ceilings: a worker asking for more is not deployed (Ready=False, LimitExceeded).'),
  }).optional()
    .describe('Defaults and ceilings of the EdgeWorkers\' spec.limits (and of placement.minWarmIsolates) in the namespaces.'),
  routes: z.object({
    hosts: z.array(HostGrantSchema).max(1024)
      .meta({ 'x-kubernetes-list-type': 'set' })
      .describe('Hosts the namespaces may claim ("shop.example.com", "*.shop.example.com"); hosts listed by a policy for named namespaces are theirs alone.'),
  }).optional()
    .describe('Unset: any host not granted to another namespace.'),
  egress: EgressPolicySchema.optional()
    .describe('Where the workers may connect; unset: public internet only.'),
  gpu: z.object({
    maxGpus: z.number().int().min(0).max(65_536).optional()
      .describe('GPUs the namespace\'s model servers may hold in all: sum of gpus x replicasPerRegion x regions.'),
    models: z.array(modelId().describe('A catalogue model id.')).max(256).optional()
      .meta({ 'x-kubernetes-list-type': 'set' })
      .describe('Catalogue models (EdgeModel spec.model) the namespace may bind; unset: all of them.'),
  }).optional()
    .describe('The GPUs and catalogue models the namespaces\' ai bindings may use.'),
}).describe('What the cluster admin decides for the namespaces: limits, hosts, egress, GPUs and models.');

export const EdgePolicyStatusSchema = z.object({
  observedGeneration: observedGeneration(),
  conditions: conditionList().optional(),
}).describe('What the operator observed; written by the operator only.');

export const EdgePolicySchema = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal('EdgePolicy'),
  metadata: ObjectMetaSchema,
  spec: EdgePolicySpecSchema,
  status: EdgePolicyStatusSchema.optional(),
});

/**
 * The task types env.AI.run implements, as Workers AI names them. automatic-speech-recognition,
 * translation, summarization and image-to-text are not there yet.
 */
export const AI_TASKS = ['text-generation', 'text-embeddings', 'text-to-image'] as const;
export type AiTaskType = (typeof AI_TASKS)[number];

export const EdgeModelSpecSchema = z.object({
  model: modelId().describe('The model id ai bindings and env.AI.run() name (@cf/meta/llama-3.1-8b-instruct); the server serves it under this name (--served-model-name).'),
  task: z.enum(AI_TASKS).default('text-generation')
    .describe('What env.AI.run() does with this model: text-generation (/v1/chat/completions, /v1/completions), text-embeddings (/v1/embeddings) or text-to-image (/v1/images/generations).'),
  source: z.string().min(1).max(256).regex(/^[A-Za-z0-9][A-Za-z0-9._:/@-]*$/).optional()
    .describe('The weights the server loads (--model), e.g. a Hugging Face repo id; unset: model.'),
  image: z.string().min(1).max(512).optional()
    .describe('Model server image speaking the OpenAI-compatible API; unset: the operator\'s --ai-image.'),
  gpus: z.number().int().min(0).max(8).default(1).describe('GPUs (nvidia.com/gpu) per model server replica, a count 0-8. Default 1.'),
  args: z.array(z.string().max(1024).describe('One argument.')).max(64).optional()
    .describe('Extra arguments after the ones the operator sets (--model, --port, --served-model-name, --tensor-parallel-size).'),
})
  // vLLM, the default image, generates no images: a text-to-image model names its server.
  .meta(cel({ rule: "self.task != 'text-to-image' || has(self.image)", message: 'spec.image: a text-to-image model needs an image (a server with /v1/images/generations); the default image has none', fieldPath: '.image' }))
  .describe('One model server the cluster offers: the model id ai bindings name, its image, GPUs and arguments.');

export const EdgeModelStatusSchema = z.object({
  observedGeneration: observedGeneration(),
  conditions: conditionList().optional(),
}).describe('What the operator observed; written by the operator only.');

export const EdgeModelSchema = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal('EdgeModel'),
  metadata: ObjectMetaSchema,
  spec: EdgeModelSpecSchema,
  status: EdgeModelStatusSchema.optional(),
});

export type EdgePolicySpec = z.infer<typeof EdgePolicySpecSchema>;
export type EdgePolicy = z.infer<typeof EdgePolicySchema>;
export type EdgeModelSpec = z.infer<typeof EdgeModelSpecSchema>;
export type EdgeModel = z.infer<typeof EdgeModelSchema>;
