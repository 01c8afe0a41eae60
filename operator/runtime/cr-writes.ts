import { FINALIZER } from '../../common/labels.js';
import { crPath, isConflict, isNotFound, type KubeApi } from './kube-client.js';

// The writes both reconcilers make to their own custom resources: the cleanup finalizer
// (merge patches carrying the resourceVersion read, so another writer's finalizers are
// never clobbered) and the status subresource.

interface Meta { name: string; namespace?: string; resourceVersion?: string; finalizers?: string[] }

/** Adds the finalizer when missing; returns the object as the apiserver has it after. */
export async function ensureFinalizer<T extends { metadata: Meta }>(client: KubeApi, plural: string, obj: T, parse: (raw: unknown) => T): Promise<T> {
  const finalizers = obj.metadata.finalizers ?? [];
  if (finalizers.includes(FINALIZER)) return obj;
  return parse(await client.request('PATCH', crPath(plural, obj.metadata.namespace, obj.metadata.name), {
    patch: 'merge',
    body: { metadata: { finalizers: [...finalizers, FINALIZER], resourceVersion: obj.metadata.resourceVersion } },
  }));
}

/** Removes the finalizer (the cleanup is done); an object already gone is fine. */
export async function removeFinalizer(client: KubeApi, plural: string, obj: { metadata: Meta }): Promise<void> {
  const rest = (obj.metadata.finalizers ?? []).filter((f) => f !== FINALIZER);
  try {
    await client.request('PATCH', crPath(plural, obj.metadata.namespace, obj.metadata.name), {
      patch: 'merge',
      body: { metadata: { finalizers: rest.length > 0 ? rest : null, resourceVersion: obj.metadata.resourceVersion } },
    });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

export const hasFinalizer = (obj: { metadata: Meta }) => (obj.metadata.finalizers ?? []).includes(FINALIZER);

/**
 * Writes the status subresource. Returns false when the object was deleted meanwhile or
 * changed under us (its next event brings the newer object and another reconcile).
 */
export async function writeStatus(client: KubeApi, plural: string, obj: { metadata: Meta }, status: unknown): Promise<boolean> {
  try {
    await client.request('PATCH', crPath(plural, obj.metadata.namespace, obj.metadata.name, 'status'), { patch: 'merge', body: { status } });
    return true;
  } catch (err) {
    if (isNotFound(err) || isConflict(err)) return false;
    throw err;
  }
}
