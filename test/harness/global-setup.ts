import type { TestProject } from 'vitest/node';
import { startControlPlane, type ControlPlane } from '../../cli/local/control-plane.js';
import { installCrds } from '../../cli/local/crds.js';

// One real control plane (etcd + kube-apiserver + nats-server) shared by the integration
// test files; each file works in namespaces of its own. Torn down even when tests fail.

declare module 'vitest' {
  export interface ProvidedContext {
    kubeconfigPath: string;
    natsUrl: string;
    controlPlaneStartMs: number;
  }
}

let cp: ControlPlane | undefined;

export async function setup(project: TestProject): Promise<void> {
  cp = await startControlPlane();
  await installCrds(cp.kubeConfig);
  console.log(`[harness] control plane ready in ${cp.startMs} ms (apiserver ${cp.apiserverUrl}, nats ${cp.natsUrl})`);
  project.provide('kubeconfigPath', cp.kubeconfigPath);
  project.provide('natsUrl', cp.natsUrl);
  project.provide('controlPlaneStartMs', cp.startMs);
}

export async function teardown(): Promise<void> {
  await cp?.stop();
}
