import { inject } from 'vitest';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';

/** The shared control plane started by global-setup.ts. */
export function sharedControlPlane(): { kubeConfig: KubeConfig; kubeconfigPath: string; natsUrl: string } {
  const kubeconfigPath = inject('kubeconfigPath');
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(kubeconfigPath);
  return { kubeConfig, kubeconfigPath, natsUrl: inject('natsUrl') };
}

/** Creates a namespace with a unique name so test files never see each other's objects. */
export async function freshNamespace(kc: KubeConfig, prefix: string): Promise<string> {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  await kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name } } });
  return name;
}
