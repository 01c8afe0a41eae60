// The name patterns of the API (the Kubernetes ones, so the apiserver and the runtime agree
// on what a valid name is), apart from meta.ts's schemas: keys.ts needs them in processes
// that build no schema (the agent's front).

/** RFC 1123 label: object names we use inside NATS keys, region names, ConfigMap keys of ours. */
export const DNS_LABEL_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';
/** RFC 1123 subdomain: names of Kubernetes objects we only refer to (ConfigMaps, Secrets). */
export const DNS_SUBDOMAIN_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';
/** A JavaScript identifier: binding names become `env.<name>`, class names are exports. */
export const JS_IDENTIFIER_PATTERN = '^[A-Za-z_$][A-Za-z0-9_$]*$';
/** ConfigMap and Secret data keys. */
export const DATA_KEY_PATTERN = '^[-._a-zA-Z0-9]+$';
