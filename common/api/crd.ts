import * as z from 'zod';
import { DNS_LABEL_PATTERN, GROUP, VERSION } from './meta.js';
import { EdgeWorkerSpecSchema, EdgeWorkerStatusSchema } from './edgeworker.js';
import { DurableActorSpecSchema, DurableActorStatusSchema } from './durableactor.js';
import { EdgeModelSpecSchema, EdgeModelStatusSchema, EdgePolicySpecSchema, EdgePolicyStatusSchema } from './edgepolicy.js';

// Turns the zod schemas into CustomResourceDefinitions. zod emits JSON Schema; the
// apiserver wants a structural OpenAPI v3 schema, so a few JSON Schema habits are undone.

interface PrinterColumn { name: string; type: string; jsonPath: string; description?: string; priority?: number }

export interface ResourceKind {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  spec: z.ZodType;
  status: z.ZodType;
  columns: PrinterColumn[];
  /** Cluster: the admin's objects, which tenants holding namespaced rights cannot write. Default Namespaced. */
  scope?: 'Namespaced' | 'Cluster';
}

const readyColumn: PrinterColumn = {
  name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status',
};
// The Ready condition's reason says why a False is False (kubectl get's REASON).
const reasonColumn: PrinterColumn = {
  name: 'Reason', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
};
const ageColumn: PrinterColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' };

export const EDGE_WORKER: ResourceKind = {
  kind: 'EdgeWorker', plural: 'edgeworkers', singular: 'edgeworker', shortNames: ['ew'],
  spec: EdgeWorkerSpecSchema, status: EdgeWorkerStatusSchema,
  columns: [
    readyColumn,
    reasonColumn,
    // A list column prints as JSON, so the operator keeps the text in status.
    { name: 'Regions', type: 'string', jsonPath: '.status.regionsText', description: 'Regions named in the spec, or "all" (every region with isolate nodes) when it names none.' },
    { name: 'Digest', type: 'string', jsonPath: '.status.bundleDigest', priority: 1 },
    ageColumn,
  ],
};

export const DURABLE_ACTOR: ResourceKind = {
  kind: 'DurableActor', plural: 'durableactors', singular: 'durableactor', shortNames: ['da'],
  spec: DurableActorSpecSchema, status: DurableActorStatusSchema,
  columns: [
    readyColumn,
    reasonColumn,
    { name: 'Region', type: 'string', jsonPath: '.status.region', description: 'Region the actors live in.' },
    { name: 'Active', type: 'integer', jsonPath: '.status.activeActors', priority: 1 },
    ageColumn,
  ],
};

export const EDGE_POLICY: ResourceKind = {
  kind: 'EdgePolicy', plural: 'edgepolicies', singular: 'edgepolicy', shortNames: ['epol'], scope: 'Cluster',
  spec: EdgePolicySpecSchema, status: EdgePolicyStatusSchema,
  columns: [
    { name: 'Namespaces', type: 'string', jsonPath: '.spec.namespaces', description: 'Namespaces governed; "*" is the default.' },
    { name: 'MaxGPUs', type: 'integer', jsonPath: '.spec.gpu.maxGpus', priority: 1 },
    ageColumn,
  ],
};

export const EDGE_MODEL: ResourceKind = {
  kind: 'EdgeModel', plural: 'edgemodels', singular: 'edgemodel', shortNames: ['em'], scope: 'Cluster',
  spec: EdgeModelSpecSchema, status: EdgeModelStatusSchema,
  columns: [
    { name: 'Model', type: 'string', jsonPath: '.spec.model' },
    { name: 'GPUs', type: 'integer', jsonPath: '.spec.gpus' },
    { name: 'Image', type: 'string', jsonPath: '.spec.image', priority: 1 },
    ageColumn,
  ],
};

export const RESOURCE_KINDS = [EDGE_WORKER, DURABLE_ACTOR, EDGE_POLICY, EDGE_MODEL] as const;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

const isObject = (v: Json | undefined): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Rewrites zod's JSON Schema into an apiextensions.k8s.io/v1 structural schema. */
function toStructural(node: Json): Json {
  if (Array.isArray(node)) return node.map(toStructural);
  if (!isObject(node)) return node;
  const out: JsonObject = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === '$schema' || key === 'id') continue;
    // A structural schema forbids additionalProperties beside properties; the apiserver
    // prunes unknown fields instead, and strict field validation reports them.
    if (key === 'additionalProperties' && (value === false || isObject(node.properties))) continue;
    // zod marks number().int() with the JS safe-integer bounds; they are noise in a CRD.
    if ((key === 'minimum' || key === 'maximum') && typeof value === 'number' && Math.abs(value) === Number.MAX_SAFE_INTEGER) continue;
    if (key === 'x-kubernetes-validations' && Array.isArray(value)) { out[key] = value; continue; }
    out[key] = toStructural(value);
  }
  if (out.type === 'object' && !('properties' in out) && !('additionalProperties' in out)) {
    out['x-kubernetes-preserve-unknown-fields'] = true;
  }
  return out;
}

function schemaOf(t: z.ZodType): Json {
  return toStructural(z.toJSONSchema(t, { target: 'openapi-3.0', io: 'input', unrepresentable: 'throw' }) as Json);
}

export function buildCrd(r: ResourceKind): JsonObject {
  const openAPIV3Schema: JsonObject = {
    type: 'object',
    description: `${r.kind} (${GROUP}/${VERSION}); see docs/api.md.`,
    required: ['spec'],
    properties: {
      // Kubernetes' own words (as controller-gen writes them).
      apiVersion: {
        type: 'string',
        description: 'APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources',
      },
      kind: {
        type: 'string',
        description: 'Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds',
      },
      // The apiserver refuses anything but name and generateName here, a description too;
      // kubectl explain shows ObjectMeta's own.
      metadata: { type: 'object' },
      spec: schemaOf(r.spec),
      status: schemaOf(r.status),
    },
    // Names end up in NATS keys and subjects ("<namespace>.<name>"), so no dots and at
    // most one DNS label, stricter than the apiserver's default for custom resources.
    'x-kubernetes-validations': [
      {
        rule: `self.metadata.name.size() <= 63 && self.metadata.name.matches('${DNS_LABEL_PATTERN}')`,
        message: 'metadata.name must be a DNS label: at most 63 lower-case letters, digits and "-" (no dots)',
      },
    ],
  };
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${r.plural}.${GROUP}` },
    spec: {
      group: GROUP,
      names: { kind: r.kind, listKind: `${r.kind}List`, plural: r.plural, singular: r.singular, shortNames: r.shortNames, categories: ['edge'] },
      scope: r.scope ?? 'Namespaced',
      versions: [{
        name: VERSION,
        served: true,
        storage: true,
        subresources: { status: {} },
        additionalPrinterColumns: r.columns as unknown as Json,
        schema: { openAPIV3Schema },
      }],
    },
  };
}
