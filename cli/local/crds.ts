import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ApiextensionsV1Api, type KubeConfig, KubernetesObjectApi, PatchStrategy, loadYaml, type KubernetesObject,
} from '@kubernetes/client-node';
import { waitFor } from './ports.js';
import { REPO_ROOT } from './tools.js';

/**
 * The generated CRD manifests in crds/, as client-node models. client-node serializes a
 * known kind through its camelCase model, so a plain YAML object would silently lose its
 * `x-kubernetes-*` keys on the way to the apiserver: loadYaml maps them onto the model.
 */
export function crdManifests(): KubernetesObject[] {
  const dir = join(REPO_ROOT, 'crds');
  return readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort()
    .map((f) => loadYaml<KubernetesObject>(readFileSync(join(dir, f), 'utf8')));
}

/** Server-side applies crds/ and waits until every CRD is Established. */
export async function installCrds(kc: KubeConfig, fieldManager = 'edge-isolates'): Promise<void> {
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const ext = kc.makeApiClient(ApiextensionsV1Api);
  const crds = crdManifests();
  for (const crd of crds) {
    await objects.patch(crd, undefined, undefined, fieldManager, true, PatchStrategy.ServerSideApply);
  }
  for (const crd of crds) {
    const name = crd.metadata?.name ?? '';
    await waitFor(`CRD ${name} Established`, async () => {
      const got = await ext.readCustomResourceDefinition({ name });
      return got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True') ?? false;
    }, 30_000);
  }
}
