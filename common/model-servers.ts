import { createHash } from 'node:crypto';
import type { AiServiceRef } from './resolve-bindings.js';

// How a worker's ai binding names its model server in a region: the operator creates the
// Deployment and Service under this name (operator/controllers/inference.ts), and an agent
// serving a directory of manifests reaches the same name, so both modes agree on it.

/** The port the model server listens on (container and Service). */
export const INFERENCE_PORT = 8000;

/** Length of shortHash(). */
export const HASH_CHARS = 8;
const MAX_NAME = 63;

/** The first HASH_CHARS hex of the sha256 of the parts. */
export function shortHash(...parts: string[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, HASH_CHARS);
}

/** Lower case, anything outside [a-z0-9] becomes '-', runs of '-' collapse, no '-' at the ends. */
function sanitize(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
}

/**
 * The name of the Deployment and the Service of one binding in one region: a DNS-1035 label
 * (Service names must start with a letter), at most 63 characters, `<worker>-<binding>-<region>`
 * sanitised and cut to fit, then `-<hash>` of the exact (worker, binding, region).
 *
 * The hash is always there: lower-casing loses information for the usual binding names
 * (`AI` and `ai` are two bindings), and joining with '-' does too, because worker and region
 * names contain '-' themselves (worker `chat-app` binding `ai` region `eu`, and worker `chat`
 * binding `app` region `ai-eu`, would both read `chat-app-ai-eu`).
 */
export function inferenceName(worker: string, binding: string, region: string, workerNamespace?: string): string {
  // In a namespace shared by every tenant's model servers, the worker's namespace is part of
  // the identity (and of the name, for whoever reads `kubectl get deploy`).
  const hash = workerNamespace === undefined ? shortHash(worker, binding, region) : shortHash(workerNamespace, worker, binding, region);
  let base = [...(workerNamespace === undefined ? [] : [workerNamespace]), worker, binding, region].map(sanitize).filter((s) => s !== '').join('-');
  if (!/^[a-z]/.test(base)) base = `ai-${base}`;
  base = base.slice(0, MAX_NAME - 1 - HASH_CHARS).replace(/-+$/, '');
  return `${base}-${hash}`;
}

/**
 * The Service of one binding's model server in one region: in the worker's namespace, or,
 * with `serverNamespace` (the operator's --model-namespace), in that one shared namespace.
 */
export function modelServerRef(namespace: string, worker: string, binding: string, region: string, serverNamespace?: string): AiServiceRef {
  if (serverNamespace === undefined) return { service: inferenceName(worker, binding, region), namespace, port: INFERENCE_PORT };
  return { service: inferenceName(worker, binding, region, namespace), namespace: serverNamespace, port: INFERENCE_PORT };
}
