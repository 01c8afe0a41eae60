// The one place for the label, annotation and finalizer keys the operator, the agents and
// the manifests share.

/** Standard Kubernetes topology label: the region a Node belongs to. */
export const REGION_LABEL = 'topology.kubernetes.io/region';
/** Standard Kubernetes topology label: the zone a Node belongs to. */
export const ZONE_LABEL = 'topology.kubernetes.io/zone';
/** Which pool a Node is in: `isolate` (runs the node agent) or `gpu` (runs inference pods). */
export const POOL_LABEL = 'edge.isolates.dev/pool';
export const POOL_ISOLATE = 'isolate';
export const POOL_GPU = 'gpu';
/** The taint GPU-pool nodes carry, tolerated by inference pods only. */
export const GPU_TAINT_KEY = 'nvidia.com/gpu';
/** Finalizer the operator puts on CRs so NATS state is removed before the CR goes away. */
export const FINALIZER = 'edge.isolates.dev/cleanup';
/** Label on everything the operator creates, naming the worker it belongs to. */
export const WORKER_LABEL = 'edge.isolates.dev/worker';
/** Label naming the worker's namespace, on model servers kept in the operator's model namespace. */
export const WORKER_NAMESPACE_LABEL = 'edge.isolates.dev/worker-namespace';
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY = 'edge-isolates';
/** Standard Kubernetes app labels on what the operator creates. */
export const APP_NAME_LABEL = 'app.kubernetes.io/name';
export const APP_INSTANCE_LABEL = 'app.kubernetes.io/instance';
/** `app.kubernetes.io/name` of the GPU inference Deployments, Services and pods of `ai` bindings. */
export const INFERENCE_APP = 'edge-inference';
/** The `ai` binding an inference object serves (label value; the exact name is in the annotation of the same key). */
export const AI_BINDING_LABEL = 'edge.isolates.dev/ai-binding';
/** The region an object the operator creates serves (Nodes carry REGION_LABEL instead). */
export const SERVES_REGION_LABEL = 'edge.isolates.dev/region';
/** Hash of the spec the operator last wrote, so a change it made (removed fields included) is seen. */
export const SPEC_HASH_ANNOTATION = 'edge.isolates.dev/spec-hash';
