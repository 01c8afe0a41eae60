// The API group and version, apart from the schemas: what a raw apiserver client needs
// (operator/runtime/kube-client.ts, so `edge status`) without loading zod.

export const GROUP = 'edge.isolates.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
