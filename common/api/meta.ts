import * as z from 'zod';
import { DATA_KEY_PATTERN, DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, JS_IDENTIFIER_PATTERN } from './patterns.js';

// Shared building blocks of the edge.isolates.dev API. Patterns are the Kubernetes ones so
// the apiserver and the runtime agree on what a valid name is.

export { API_VERSION, GROUP, VERSION } from './group.js';

export { DATA_KEY_PATTERN, DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, JS_IDENTIFIER_PATTERN };

export const dnsLabel = () => z.string().min(1).max(63).regex(new RegExp(DNS_LABEL_PATTERN));
export const dnsSubdomain = () => z.string().min(1).max(253).regex(new RegExp(DNS_SUBDOMAIN_PATTERN));
export const jsIdentifier = () => z.string().min(1).max(64).regex(new RegExp(JS_IDENTIFIER_PATTERN));
export const dataKey = () => z.string().min(1).max(253).regex(new RegExp(DATA_KEY_PATTERN));
/** A model id as ai bindings and the catalogue name it (`llama-3.1-8b`, `meta-llama/Llama-3.1-8B-Instruct`). */
/**
 * A model id: Workers AI's `@cf/<vendor>/<name>` or `@hf/<org>/<name>`, or a plain name
 * (letters, digits, `._:/@-`, starting with a letter or digit: a Hugging Face repo id).
 */
export const MODEL_ID_PATTERN = /^@(cf|hf)\/[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._:-]*$|^[A-Za-z0-9][A-Za-z0-9._:/@-]*$/;
export const modelId = () => z.string().min(1).max(256)
  .regex(MODEL_ID_PATTERN, 'a model id is @cf/<vendor>/<name>, @hf/<org>/<name>, or a name of letters, digits and ._:/@- starting with a letter or digit');
export const regionName = () => dnsLabel().describe('A region: the value of topology.kubernetes.io/region on its Nodes.');

/** The subset of ObjectMeta the project reads; the rest passes through untouched. */
export const ObjectMetaSchema = z.looseObject({
  name: z.string(),
  namespace: z.string().optional(),
  uid: z.string().optional(),
  generation: z.number().int().optional(),
  /** Route ownership and GPU quota go to the oldest claimant. */
  creationTimestamp: z.string().optional(),
  resourceVersion: z.string().optional(),
  labels: z.record(z.string(), z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  finalizers: z.array(z.string()).optional(),
  deletionTimestamp: z.string().optional(),
});
export type ObjectMeta = z.infer<typeof ObjectMetaSchema>;

/** metav1.Condition, as the apiserver validates it elsewhere. */
export const ConditionSchema = z.object({
  type: z.string().min(1).max(316).regex(/^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$/)
    .describe('The aspect this condition is about: Ready, Placed or Degraded (docs/operator.md).'),
  status: z.enum(['True', 'False', 'Unknown']).describe('True, False or Unknown.'),
  observedGeneration: z.number().int().min(0).optional()
    .describe('The metadata.generation this condition was computed from; older than metadata.generation means it is stale.'),
  lastTransitionTime: z.string().meta({ format: 'date-time' })
    .describe('When status last changed (RFC 3339 time).'),
  reason: z.string().min(1).max(1024).regex(/^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/)
    .describe('Why, in one CamelCase word scripts can match on (common/reasons.ts); kubectl get prints the Ready condition\'s as REASON.'),
  message: z.string().max(32768).describe('Why, for a person: what is wrong and what would fix it; may be empty.'),
}).describe('One aspect of the object\'s state.');
export type Condition = z.infer<typeof ConditionSchema>;

export const conditionList = () =>
  z.array(ConditionSchema).max(16).meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'] })
    .describe('The latest observations of the object\'s state, one per type (metav1.Condition); Ready=True means it serves.');

/** status.observedGeneration, alike in every kind. */
export const observedGeneration = () => z.number().int().min(0).optional()
  .describe('The metadata.generation the operator last acted on; behind metadata.generation means the status is not yet about the current spec.');

/** A CEL rule the generator copies into the CRD as x-kubernetes-validations. */
export interface CelRule {
  rule: string;
  message: string;
  fieldPath?: string;
  reason?: 'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
}
export const cel = (...rules: CelRule[]) => ({ 'x-kubernetes-validations': rules });
