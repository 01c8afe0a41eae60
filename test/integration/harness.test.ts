import { existsSync } from 'node:fs';
import { AuthorizationV1Api, CoreV1Api, VersionApi } from '@kubernetes/client-node';
import { connect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../cli/local/control-plane.js';
import { toolVersions } from '../../cli/local/tools.js';

// The harness itself: a control plane of its own (not the shared one), so stopping it can
// be checked for leftovers.

const alive = (pid: number) => {
  try { process.kill(pid, 0); return true; } catch { return false; }
};

describe('control-plane harness', () => {
  let cp: ControlPlane;
  beforeAll(async () => { cp = await startControlPlane(); });
  afterAll(async () => { await cp?.stop(); });

  it('starts a real kube-apiserver reporting the pinned version', async () => {
    console.log(`[harness] own control plane started in ${cp.startMs} ms`);
    const v = await cp.kubeConfig.makeApiClient(VersionApi).getCode();
    expect(v.gitVersion).toBe(toolVersions()['kube-apiserver']);
    expect(v.major).toBe('1');
  });

  it('authorizes with RBAC: the admin may do anything, a fresh ServiceAccount may not', async () => {
    const core = cp.kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespacedServiceAccount({ namespace: 'default', body: { metadata: { name: 'nobody' } } });
    // A TokenRequest only works when the service-account signing key is set up.
    const tr = await core.createNamespacedServiceAccountToken({
      name: 'nobody', namespace: 'default', body: { spec: { audiences: [cp.apiserverUrl], expirationSeconds: 600 } },
    });
    expect(tr.status?.token).toMatch(/^ey/);
    const review = await cp.kubeConfig.makeApiClient(AuthorizationV1Api).createSubjectAccessReview({
      body: {
        spec: {
          user: 'system:serviceaccount:default:nobody',
          groups: ['system:serviceaccounts', 'system:authenticated'],
          resourceAttributes: { verb: 'list', resource: 'secrets', namespace: 'default' },
        },
      },
    });
    expect(review.status?.allowed).toBe(false);
    const admin = await cp.kubeConfig.makeApiClient(AuthorizationV1Api).createSelfSubjectAccessReview({
      body: { spec: { resourceAttributes: { verb: '*', resource: '*' } } },
    });
    expect(admin.status?.allowed).toBe(true);
  });

  it('starts nats-server with JetStream', async () => {
    const nc = await connect(cp.natsOptions());
    try {
      const kv = await nc.jetstream().views.kv('harness-check');
      await kv.put('k', 'v');
      expect((await kv.get('k'))?.string()).toBe('v');
    } finally {
      await nc.close();
    }
  });

  it('leaves no process and no temp dir behind after stop', async () => {
    const pids = cp.processes.map((p) => p.child.pid).filter((p): p is number => p !== undefined);
    expect(pids).toHaveLength(3);
    expect(pids.every(alive)).toBe(true);
    await cp.stop();
    expect(pids.filter(alive)).toEqual([]);
    expect(existsSync(cp.dir)).toBe(false);
  });
});
