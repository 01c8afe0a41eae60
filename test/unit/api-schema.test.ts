import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  EdgeWorkerSpecSchema, DurableActorSpecSchema, buildCrd, EDGE_MODEL, EDGE_POLICY, EDGE_WORKER, isBareTldWildcard,
} from '../../common/api/index.js';

// The zod schemas are used at runtime by the operator; these checks pin the runtime view
// to what the CRD says (the integration test checks the apiserver agrees).

describe('EdgeWorker spec schema', () => {
  it('fills the same defaults the CRD declares: none for limits, which the EdgePolicy defaults', () => {
    const spec = EdgeWorkerSpecSchema.parse({ source: { inline: 'export default {}' } });
    expect(spec.placement).toEqual({});
    expect(spec.limits).toBeUndefined();
  });

  it('refuses a wildcard over a whole top-level domain in the CRD (CEL), and accepts two labels', () => {
    const routes = JSON.stringify(buildCrd(EDGE_WORKER));
    expect(routes).toContain("self.host.matches('^[*][.][^.]+[.][^.]+')");
    expect(isBareTldWildcard('*.com')).toBe(true);
    expect(isBareTldWildcard('*.example.com')).toBe(false);
    expect(isBareTldWildcard('shop.localhost')).toBe(false);
  });

  it('builds the admin kinds cluster-scoped', () => {
    expect((buildCrd(EDGE_POLICY).spec as { scope: string }).scope).toBe('Cluster');
    expect((buildCrd(EDGE_MODEL).spec as { scope: string }).scope).toBe('Cluster');
    expect((buildCrd(EDGE_WORKER).spec as { scope: string }).scope).toBe('Namespaced');
  });

  it('refuses a route whose path does not start with /', () => {
    const r = EdgeWorkerSpecSchema.safeParse({ source: { inline: 'x' }, routes: [{ host: 'a.example.com', pathPrefix: 'api' }] });
    expect(r.success).toBe(false);
    expect(z.prettifyError(r.error!)).toContain('routes[0].pathPrefix');
  });

  it('emits a structural schema: no additionalProperties beside properties, no $schema', () => {
    const text = JSON.stringify(buildCrd(EDGE_WORKER));
    expect(text).not.toContain('$schema');
    expect(text).not.toContain('"additionalProperties":false');
    expect(text).toContain('x-kubernetes-validations');
  });
});

describe('DurableActor spec schema', () => {
  it('defaults idle timeout and storage size', () => {
    const spec = DurableActorSpecSchema.parse({ workerRef: { name: 'chat' }, className: 'ChatRoom' });
    expect(spec.idleTimeoutSeconds).toBe(60);
    expect(spec.storage.maxBytesPerActor).toBe(10 * 1024 * 1024);
    expect(spec.storage.backend).toBe('kv');
    expect(DurableActorSpecSchema.parse({ workerRef: { name: 'chat' }, className: 'C', storage: { backend: 'sqlite' } }).storage).toEqual({ backend: 'sqlite', maxBytesPerActor: 10 * 1024 * 1024 });
    expect(DurableActorSpecSchema.safeParse({ workerRef: { name: 'chat' }, className: 'C', storage: { backend: 'postgres' } }).success).toBe(false);
  });
});
