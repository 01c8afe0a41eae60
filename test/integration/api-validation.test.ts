import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiException, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { parseAllDocuments, stringify } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  API_VERSION, DurableActorSpecSchema, EdgeWorkerSpecSchema, GROUP, VERSION,
} from '../../common/api/index.js';
import { kubectl } from '../../cli/local/kubectl.js';
import { freshNamespace, sharedControlPlane } from '../harness/shared.js';
import { REPO_ROOT } from '../../cli/local/tools.js';

// The API is enforced by the real apiserver: valid objects round-trip unchanged, invalid
// ones are refused with a message naming the field. Clients use strict field validation
// (kubectl's default, and what the project's own clients send), so unknown fields are
// refused rather than silently pruned.

type Obj = Record<string, unknown>;
const clone = <T>(v: T): T => structuredClone(v);

const fullWorker = (): Obj => ({
  apiVersion: API_VERSION,
  kind: 'EdgeWorker',
  metadata: { name: 'full' },
  spec: {
    source: { inline: 'export default { fetch() { return new Response("hi") } }' },
    compatibilityDate: '2025-01-01',
    compatibilityFlags: ['nodejs_compat'],
    routes: [{ host: 'hello.example.com', pathPrefix: '/' }, { host: '*.example.com', pathPrefix: '/api' }],
    placement: { regions: ['eu-west', 'us-east'], minWarmIsolates: 2 },
    limits: { cpuMsPerRequest: 50, memoryMiB: 128, subrequests: 50, wallMsPerRequest: 30000 },
    bindings: {
      vars: { GREETING: 'hi' },
      secrets: [{ name: 'API_KEY', secretKeyRef: { name: 's', key: 'k' } }],
      actors: [{ name: 'ROOMS', actor: 'chat-rooms' }],
      ai: [{ name: 'AI', model: 'llama-3.1-8b', image: 'ghcr.io/example/server:1', gpus: 1, replicasPerRegion: 1 }],
      services: [{ name: 'API', worker: 'api' }, { name: 'ADMIN', worker: 'api', entrypoint: 'Admin' }],
    },
  },
});

const fullActor = (): Obj => ({
  apiVersion: API_VERSION,
  kind: 'DurableActor',
  metadata: { name: 'chat-rooms' },
  spec: {
    workerRef: { name: 'chat' },
    className: 'ChatRoom',
    locationHint: 'eu-west',
    idleTimeoutSeconds: 60,
    storage: { maxBytesPerActor: 10485760, backend: 'sqlite' },
  },
});

/** Sets `path` (dot/bracket-free segments) in a copy of `obj`; `undefined` deletes it. */
function withField(obj: Obj, path: (string | number)[], value: unknown): Obj {
  const out = clone(obj);
  let cur = out as Record<string | number, unknown>;
  for (const seg of path.slice(0, -1)) cur = cur[seg] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  if (value === undefined) delete cur[last]; else cur[last] = value;
  return out;
}

const W = fullWorker;
const A = fullActor;

/**
 * The table of invalid objects: what is wrong (name), the object (a valid one with one
 * field broken), the field the apiserver's message must name, and what it must say.
 */
const INVALID: { name: string; obj: Obj; field: string; says?: RegExp }[] = [
  { name: 'missing source', obj: withField(W(), ['spec', 'source'], undefined), field: 'spec.source', says: /Required value/ },
  { name: 'two sources', obj: withField(W(), ['spec', 'source', 'configMapRef'], { name: 'cm', key: 'worker.js' }), field: 'spec.source', says: /exactly one of spec\.source\.inline or spec\.source\.configMapRef/ },
  { name: 'empty source', obj: withField(W(), ['spec', 'source'], {}), field: 'spec.source', says: /exactly one/ },
  { name: 'configMapRef without key', obj: withField(W(), ['spec', 'source'], { configMapRef: { name: 'cm' } }), field: 'spec.source.configMapRef.key', says: /Required value/ },
  { name: 'inline source of the wrong type', obj: withField(W(), ['spec', 'source', 'inline'], 42), field: 'spec.source.inline', says: /must be of type string/ },
  { name: 'bad region name', obj: withField(W(), ['spec', 'placement', 'regions'], ['EU_West']), field: 'spec.placement.regions[0]' },
  { name: 'duplicate region', obj: withField(W(), ['spec', 'placement', 'regions'], ['eu-west', 'eu-west']), field: 'spec.placement.regions[1]', says: /Duplicate value/ },
  { name: 'absurd warm isolates', obj: withField(W(), ['spec', 'placement', 'minWarmIsolates'], 100000), field: 'spec.placement.minWarmIsolates' },
  { name: 'negative CPU limit', obj: withField(W(), ['spec', 'limits', 'cpuMsPerRequest'], -5), field: 'spec.limits.cpuMsPerRequest', says: /greater than or equal to 1/ },
  { name: 'absurd memory limit', obj: withField(W(), ['spec', 'limits', 'memoryMiB'], 1_000_000), field: 'spec.limits.memoryMiB', says: /less than or equal to 2048/ },
  { name: 'wall limit below CPU limit', obj: withField(W(), ['spec', 'limits'], { cpuMsPerRequest: 500, memoryMiB: 128, subrequests: 5, wallMsPerRequest: 100 }), field: 'spec.limits.wallMsPerRequest' },
  { name: 'limit of the wrong type', obj: withField(W(), ['spec', 'limits', 'subrequests'], 'many'), field: 'spec.limits.subrequests', says: /must be of type integer/ },
  { name: 'unknown binding kind', obj: withField(W(), ['spec', 'bindings', 'queues'], [{ name: 'Q' }]), field: 'spec.bindings.queues', says: /unknown field/ },
  { name: 'unknown spec field', obj: withField(W(), ['spec', 'replicas'], 3), field: 'spec.replicas', says: /unknown field/ },
  { name: 'secret binding name not an identifier', obj: withField(W(), ['spec', 'bindings', 'secrets', 0, 'name'], 'API-KEY'), field: 'spec.bindings.secrets[0].name' },
  { name: 'var name not an identifier', obj: withField(W(), ['spec', 'bindings', 'vars'], { 'my-var': 'x' }), field: 'spec.bindings.vars', says: /JavaScript identifiers/ },
  { name: 'same name in vars and secrets', obj: withField(W(), ['spec', 'bindings', 'vars'], { API_KEY: 'x' }), field: 'spec.bindings.secrets', says: /unique across kinds/ },
  { name: 'same name in actors and ai', obj: withField(W(), ['spec', 'bindings', 'actors', 0, 'name'], 'AI'), field: 'spec.bindings.ai', says: /unique across kinds/ },
  { name: 'service binding naming another namespace\'s worker', obj: withField(W(), ['spec', 'bindings', 'services', 0, 'worker'], 'tenant-b/api'), field: 'spec.bindings.services[0].worker' },
  { name: 'service binding entrypoint not an identifier', obj: withField(W(), ['spec', 'bindings', 'services', 1, 'entrypoint'], 'my-entry'), field: 'spec.bindings.services[1].entrypoint' },
  { name: 'same name in ai and services', obj: withField(W(), ['spec', 'bindings', 'services', 0, 'name'], 'AI'), field: 'spec.bindings.services', says: /unique across kinds/ },
  { name: 'duplicate secret binding', obj: withField(W(), ['spec', 'bindings', 'secrets'], [{ name: 'K', secretKeyRef: { name: 's', key: 'a' } }, { name: 'K', secretKeyRef: { name: 's', key: 'b' } }]), field: 'spec.bindings.secrets[1]', says: /Duplicate value/ },
  { name: 'ai binding without model', obj: withField(W(), ['spec', 'bindings', 'ai', 0, 'model'], undefined), field: 'spec.bindings.ai[0].model', says: /Required value/ },
  { name: 'negative GPU count', obj: withField(W(), ['spec', 'bindings', 'ai', 0, 'gpus'], -1), field: 'spec.bindings.ai[0].gpus' },
  { name: 'route host with upper case and port', obj: withField(W(), ['spec', 'routes'], [{ host: 'Hello.example.com:8080' }]), field: 'spec.routes[0].host' },
  { name: 'route path without leading slash', obj: withField(W(), ['spec', 'routes'], [{ host: 'a.example.com', pathPrefix: 'api' }]), field: 'spec.routes[0].pathPrefix' },
  { name: 'impossible compatibility date', obj: withField(W(), ['spec', 'compatibilityDate'], '2025-13-40'), field: 'spec.compatibilityDate' },
  { name: 'unknown compatibility flag', obj: withField(W(), ['spec', 'compatibilityFlags'], ['nodejs_compat', 'streams_enable_constructors']), field: 'spec.compatibilityFlags[1]', says: /Unsupported value/ },
  { name: 'over-long name', obj: withField(W(), ['metadata', 'name'], 'w'.repeat(64)), field: 'metadata.name', says: /DNS label/ },
  { name: 'name with dots', obj: withField(W(), ['metadata', 'name'], 'my.worker'), field: 'metadata.name', says: /no dots/ },
  { name: 'actor without workerRef', obj: withField(A(), ['spec', 'workerRef'], undefined), field: 'spec.workerRef', says: /Required value/ },
  { name: 'actor class name not an identifier', obj: withField(A(), ['spec', 'className'], 'chat-room'), field: 'spec.className' },
  { name: 'actor idle timeout zero', obj: withField(A(), ['spec', 'idleTimeoutSeconds'], 0), field: 'spec.idleTimeoutSeconds' },
  { name: 'actor location hint not a region', obj: withField(A(), ['spec', 'locationHint'], 'Europe West'), field: 'spec.locationHint' },
  { name: 'actor storage too small', obj: withField(A(), ['spec', 'storage', 'maxBytesPerActor'], 10), field: 'spec.storage.maxBytesPerActor' },
  { name: 'actor storage backend unknown', obj: withField(A(), ['spec', 'storage', 'backend'], 'postgres'), field: 'spec.storage.backend', says: /Unsupported value/ },
  { name: 'actor with unknown field', obj: withField(A(), ['spec', 'replicas'], 2), field: 'spec.replicas', says: /unknown field/ },
];

const pluralOf = (o: Obj) => (o.kind === 'EdgeWorker' ? 'edgeworkers' : 'durableactors');

async function createStrict(kc: KubeConfig, namespace: string, obj: Obj): Promise<Obj> {
  return kc.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
    group: GROUP, version: VERSION, namespace, plural: pluralOf(obj), body: obj, fieldValidation: 'Strict',
  }) as Promise<Obj>;
}

function messageOf(err: unknown): string {
  if (err instanceof ApiException) {
    const body: unknown = typeof err.body === 'string' ? JSON.parse(err.body) : err.body;
    return (body as { message?: string }).message ?? String(err.body);
  }
  throw err;
}

describe('the apiserver enforces the edge.isolates.dev API', () => {
  const { kubeConfig: kc, kubeconfigPath } = sharedControlPlane();
  let ns: string;
  let invalidNs: string;
  beforeAll(async () => {
    ns = await freshNamespace(kc, 'api');
    invalidNs = await freshNamespace(kc, 'invalid');
  });

  it('kubectl applies the CRDs and serves them with short names', async () => {
    // Server-side: the harness installed them already with client-node's server-side apply.
    const applied = await kubectl(kubeconfigPath, ['apply', '--server-side', '--force-conflicts', '-f', join(REPO_ROOT, 'crds')]);
    expect(applied.stderr).toBe('');
    expect(applied.code).toBe(0);
    expect(applied.stdout).toMatch(/edgeworkers\.edge\.isolates\.dev serverside-applied/);
    const res = await kubectl(kubeconfigPath, ['api-resources', '--api-group', GROUP, '--no-headers']);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/^edgeworkers\s+ew\s+edge\.isolates\.dev\/v1alpha1\s+true\s+EdgeWorker$/m);
    expect(res.stdout).toMatch(/^durableactors\s+da\s+edge\.isolates\.dev\/v1alpha1\s+true\s+DurableActor$/m);
  });

  it('accepts complete objects and reads them back unchanged', async () => {
    for (const obj of [fullWorker(), fullActor()]) {
      const created = await createStrict(kc, ns, obj);
      expect(created.spec).toEqual(obj.spec);
      const read = await kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({
        group: GROUP, version: VERSION, namespace: ns, plural: pluralOf(obj), name: (obj.metadata as Obj).name as string,
      }) as Obj;
      expect(read.spec).toEqual(obj.spec);
    }
  });

  it('fills the same defaults as the zod schemas the operator parses with', async () => {
    const worker = { apiVersion: API_VERSION, kind: 'EdgeWorker', metadata: { name: 'minimal' }, spec: { source: { inline: 'export default {}' }, routes: [{ host: 'm.example.com' }] } };
    const actor = { apiVersion: API_VERSION, kind: 'DurableActor', metadata: { name: 'minimal' }, spec: { workerRef: { name: 'minimal' }, className: 'C' } };
    expect((await createStrict(kc, ns, worker)).spec).toEqual(EdgeWorkerSpecSchema.parse(worker.spec));
    expect((await createStrict(kc, ns, actor)).spec).toEqual(DurableActorSpecSchema.parse(actor.spec));
  });

  it('kubectl creates the examples and prints the Ready/Reason/Regions/Age columns', async () => {
    const exNs = await freshNamespace(kc, 'examples');
    for (const f of ['hello.yaml', 'counter.yaml']) {
      const r = await kubectl(kubeconfigPath, ['-n', exNs, 'create', '-f', join(REPO_ROOT, 'examples', f)]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      // Each example is a valid spec for the runtime schemas too.
      for (const doc of parseAllDocuments(readFileSync(join(REPO_ROOT, 'examples', f), 'utf8'))) {
        const o = doc.toJSON() as Obj;
        const schema = o.kind === 'EdgeWorker' ? EdgeWorkerSpecSchema : DurableActorSpecSchema;
        expect(schema.safeParse(o.spec).success).toBe(true);
      }
    }
    const got = await kubectl(kubeconfigPath, ['-n', exNs, 'get', 'ew']);
    expect(got.stdout.split('\n')[0]).toMatch(/^NAME\s+READY\s+REASON\s+REGIONS\s+AGE$/);
    // Regions come from status as text (the operator writes it; none runs here), never the spec's JSON list.
    expect(got.stdout).not.toContain('["eu-west"');
    const da = await kubectl(kubeconfigPath, ['-n', exNs, 'get', 'da', 'counters']);
    expect(da.code).toBe(0);
  });

  describe.each(INVALID)('refuses $name', ({ obj, field, says }) => {
    it('through client-node, naming the field', async () => {
      const msg = await createStrict(kc, invalidNs, obj).then(() => '(accepted)', messageOf);
      expect(msg).toContain(field);
      if (says) expect(msg).toMatch(says);
    });

    it('through kubectl, naming the field', async () => {
      const r = await kubectl(kubeconfigPath, ['-n', invalidNs, 'create', '-f', '-'], stringify(obj));
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain(field);
      if (says) expect(r.stderr).toMatch(says);
    });
  });

  it('refuses a change of spec.storage.backend after creation, naming the field', async () => {
    const obj = withField(withField(A(), ['metadata', 'name'], 'fixed-backend'), ['spec', 'storage', 'backend'], 'sqlite');
    await createStrict(kc, ns, obj);
    const msg = await kc.makeApiClient(CustomObjectsApi).patchNamespacedCustomObject({
      group: GROUP, version: VERSION, namespace: ns, plural: 'durableactors', name: 'fixed-backend',
      body: [{ op: 'replace', path: '/spec/storage/backend', value: 'kv' }],
    }).then(() => '(accepted)', messageOf);
    expect(msg).toContain('spec.storage.backend');
    expect(msg).toMatch(/immutable/);
  });

  it('lists at least 20 distinct invalid objects', () => {
    expect(new Set(INVALID.map((c) => c.name)).size).toBe(INVALID.length);
    expect(INVALID.length).toBeGreaterThanOrEqual(20);
  });
});
