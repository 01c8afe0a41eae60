import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { EdgeWorkerSpecSchema, MAX_SOURCE_BYTES, type EdgeWorkerSpec } from '../../common/api/index.js';
import { FakeBindingLookup } from '../../common/fake/binding-lookup.js';
import { modelServerRef } from '../../common/model-servers.js';
import {
  BindingResolutionError, RESOLVE_REASONS, resolveEnv, builtinRunSettings, resolveWorker, sha256Digest, workerVersion,
} from '../../common/resolve-bindings.js';
import { aiUrlFromTemplate, isolateWorkerEnv } from '../../node-agent/control/worker-env.js';

// The one binding resolver (common/resolve-bindings.ts), used by the operator and by
// `edge agent --workers DIR`: each binding kind, and each missing reference named by field.

const NS = 'team-a';
const spec = (s: Record<string, unknown>): EdgeWorkerSpec => EdgeWorkerSpecSchema.parse({ source: { inline: 'export default {}' }, ...s });

async function failure(p: Promise<unknown>): Promise<BindingResolutionError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof BindingResolutionError) return err;
    throw err;
  }
  throw new Error('expected a BindingResolutionError, but it resolved');
}

describe('resolveWorker', () => {
  it('takes an inline source as it is, and one ConfigMap key for configMapRef', async () => {
    const lookup = new FakeBindingLookup();
    expect((await resolveWorker(NS, 'w', spec({ source: { inline: 'inline code' } }), lookup)).source).toBe('inline code');
    lookup.configMaps.set(`${NS}/code`, { 'worker.js': 'from the ConfigMap', other: 'not this' });
    const s = spec({ source: { configMapRef: { name: 'code', key: 'worker.js' } } });
    expect((await resolveWorker(NS, 'w', s, lookup)).source).toBe('from the ConfigMap');
    // Only the worker's own namespace is looked in.
    expect((await failure(resolveWorker('team-b', 'w', s, lookup))).message).toBe('spec.source.configMapRef: ConfigMap team-b/code not found');
  });

  it('names spec.source.configMapRef when the ConfigMap or its key is missing', async () => {
    const lookup = new FakeBindingLookup();
    const s = spec({ source: { configMapRef: { name: 'code', key: 'worker.js' } } });
    const missing = await failure(resolveWorker(NS, 'w', s, lookup));
    expect(missing).toMatchObject({ reason: RESOLVE_REASONS.SourceNotFound, field: 'spec.source.configMapRef', name: 'BindingResolutionError' });
    expect(missing.message).toBe(`spec.source.configMapRef: ConfigMap ${NS}/code not found`);
    lookup.configMaps.set(`${NS}/code`, { 'other.js': 'x' });
    expect((await failure(resolveWorker(NS, 'w', s, lookup))).message).toBe(`spec.source.configMapRef: ConfigMap ${NS}/code has no key "worker.js"`);
  });

  it('unpacks a gzip-compressed source from binaryData (a .gz key), and takes another binaryData key as UTF-8 text', async () => {
    const lookup = new FakeBindingLookup();
    const code = `export default { fetch() { return new Response(${JSON.stringify('é'.repeat(300_000))}); } }`;
    lookup.configMapBinaries.set(`${NS}/code`, { 'worker.js.gz': gzipSync(code), 'plain.js': Buffer.from('plain ✓') });
    expect((await resolveWorker(NS, 'w', spec({ source: { configMapRef: { name: 'code', key: 'worker.js.gz' } } }), lookup)).source).toBe(code);
    expect((await resolveWorker(NS, 'w', spec({ source: { configMapRef: { name: 'code', key: 'plain.js' } } }), lookup)).source).toBe('plain ✓');
    expect((await failure(resolveWorker(NS, 'w', spec({ source: { configMapRef: { name: 'code', key: 'other.js.gz' } } }), lookup))).reason).toBe(RESOLVE_REASONS.SourceNotFound);
  });

  it('refuses a gzip bomb as BundleInvalid, zlib stopped at MAX_SOURCE_BYTES; and data that is not gzip or not UTF-8', async () => {
    const lookup = new FakeBindingLookup();
    // 1 GiB of zeros in 64 KiB: 64 gzip members of 16 MiB each (gunzip reads every member).
    const member = gzipSync(Buffer.alloc(16 * 1024 * 1024), { level: 9 });
    const bomb = Buffer.concat(Array.from({ length: 64 }, () => member));
    expect(bomb.byteLength).toBeLessThan(1024 * 1024);
    lookup.configMapBinaries.set(`${NS}/code`, { 'bomb.js.gz': bomb, 'junk.js.gz': Buffer.from('not gzip'), 'latin1.js': Buffer.from([0x65, 0xe9, 0x0a]) });
    const bombed = await failure(resolveWorker(NS, 'w', spec({ source: { configMapRef: { name: 'code', key: 'bomb.js.gz' } } }), lookup));
    expect(bombed).toMatchObject({ reason: RESOLVE_REASONS.BundleInvalid, field: 'spec.source.configMapRef' });
    expect(bombed.message).toBe(`spec.source.configMapRef: ConfigMap ${NS}/code key "bomb.js.gz": decompresses to more than ${MAX_SOURCE_BYTES} bytes`);
    const junk = await failure(resolveWorker(NS, 'w', spec({ source: { configMapRef: { name: 'code', key: 'junk.js.gz' } } }), lookup));
    expect(junk.reason).toBe(RESOLVE_REASONS.BundleInvalid);
    expect(junk.message).toMatch(/key "junk.js.gz": is not gzip data/);
    expect((await failure(resolveWorker(NS, 'w', spec({ source: { configMapRef: { name: 'code', key: 'latin1.js' } } }), lookup))).message).toMatch(/is not UTF-8 text$/);
  });

  it('puts vars in env.text and Secret values in env.secrets (a secret wins over a var of its name)', async () => {
    const lookup = new FakeBindingLookup();
    lookup.secrets.set(`${NS}/creds`, { token: 's3cret', user: 'ann' });
    const { env } = await resolveWorker(NS, 'w', spec({
      bindings: {
        vars: { GREETING: 'hi', USER: 'var' },
        secrets: [{ name: 'TOKEN', secretKeyRef: { name: 'creds', key: 'token' } }, { name: 'USER', secretKeyRef: { name: 'creds', key: 'user' } }],
      },
    }), lookup);
    expect(env.text).toEqual({ GREETING: 'hi' });
    expect(env.secrets).toEqual({ TOKEN: 's3cret', USER: 'ann' });
    expect(isolateWorkerEnv(env, 'eu-west', aiUrlFromTemplate()).text).toEqual({ GREETING: 'hi', TOKEN: 's3cret', USER: 'ann' });
  });

  it('names the secret binding when its Secret or key is missing', async () => {
    const lookup = new FakeBindingLookup();
    const s = spec({ bindings: { secrets: [{ name: 'TOKEN', secretKeyRef: { name: 'creds', key: 'token' } }] } });
    const missing = await failure(resolveWorker(NS, 'w', s, lookup));
    expect(missing).toMatchObject({ reason: RESOLVE_REASONS.SecretNotFound, field: 'spec.bindings.secrets', binding: 'TOKEN' });
    expect(missing.message).toBe(`spec.bindings.secrets TOKEN: Secret ${NS}/creds not found`);
    lookup.secrets.set(`${NS}/creds`, { user: 'ann' });
    expect((await failure(resolveWorker(NS, 'w', s, lookup))).message).toBe(`spec.bindings.secrets TOKEN: Secret ${NS}/creds has no key "token"`);
  });

  it('gives each actor binding its DurableActor and that DurableActor\'s uid', async () => {
    const lookup = new FakeBindingLookup();
    lookup.actorUids.set(`${NS}/counter`, 'uid-1');
    lookup.actorUids.set(`${NS}/rooms`, 'uid-2');
    const { env } = await resolveWorker(NS, 'w', spec({
      bindings: { actors: [{ name: 'COUNTER', actor: 'counter' }, { name: 'ROOMS', actor: 'rooms' }] },
    }), lookup);
    expect(env.actors).toEqual({
      COUNTER: { namespace: NS, actor: 'counter', uid: 'uid-1' },
      ROOMS: { namespace: NS, actor: 'rooms', uid: 'uid-2' },
    });
  });

  it('points each service binding at a worker of the binding worker\'s own namespace, and adds nothing when there are none', async () => {
    const lookup = new FakeBindingLookup();
    const env = await resolveEnv(NS, 'w', spec({ bindings: { services: [{ name: 'API', worker: 'api' }, { name: 'ADMIN', worker: 'api', entrypoint: 'Admin' }] } }), lookup);
    expect(env.services).toEqual({ API: { namespace: NS, worker: 'api' }, ADMIN: { namespace: NS, worker: 'api', entrypoint: 'Admin' } });
    expect(isolateWorkerEnv(env, 'r1', aiUrlFromTemplate()).services).toEqual(env.services);
    // No service bindings: the env (and so every existing worker's version) is as before.
    expect('services' in await resolveEnv(NS, 'w', spec({}), lookup)).toBe(false);
    // Another namespace's worker cannot even be named.
    expect(EdgeWorkerSpecSchema.safeParse({ source: { inline: 'x' }, routes: [{ host: 'a.b' }], bindings: { services: [{ name: 'X', worker: 'team-b/api' }] } }).success).toBe(false);
  });

  it('names the actor binding when its DurableActor is missing', async () => {
    const lookup = new FakeBindingLookup();
    lookup.actorUids.set(`${NS}/counter`, 'uid-1');
    const err = await failure(resolveWorker(NS, 'w', spec({
      bindings: { actors: [{ name: 'COUNTER', actor: 'counter' }, { name: 'ROOMS', actor: 'rooms' }] },
    }), lookup));
    expect(err).toMatchObject({ reason: RESOLVE_REASONS.ActorNotFound, field: 'spec.bindings.actors', binding: 'ROOMS' });
    expect(err.message).toBe(`spec.bindings.actors ROOMS: DurableActor ${NS}/rooms not found`);
  });

  it('gives each ai binding its model and the Services the lookup names, per region', async () => {
    const lookup = new FakeBindingLookup();
    const eu = modelServerRef(NS, 'chat', 'AI', 'eu-west');
    const us = modelServerRef(NS, 'chat', 'AI', 'us-east');
    lookup.services.set('AI', { 'eu-west': eu, 'us-east': us });
    const { env } = await resolveWorker(NS, 'chat', spec({
      bindings: { ai: [{ name: 'AI', model: 'llama-3.1-8b' }, { name: 'EMBED', model: 'bge-small' }] },
    }), lookup);
    expect(env.ai).toEqual({
      AI: { model: 'llama-3.1-8b', services: { 'eu-west': eu, 'us-east': us } },
      // No Service yet: still published (agents fail its calls), never dropped.
      EMBED: { model: 'bge-small', services: {} },
    });
    expect(lookup.aiCalls).toEqual([{ namespace: NS, worker: 'chat', bindings: ['AI', 'EMBED'] }]);
  });

  it('asks for model servers even when there are no ai bindings (so the operator can remove old ones)', async () => {
    const lookup = new FakeBindingLookup();
    const { env } = await resolveWorker(NS, 'w', spec({ bindings: { vars: { A: '1' } } }), lookup);
    expect(env).toEqual({ text: { A: '1' }, secrets: {}, actors: {}, ai: {} });
    expect(lookup.aiCalls).toEqual([{ namespace: NS, worker: 'w', bindings: [] }]);
  });

  it('asks for model servers before waiting on a DurableActor', async () => {
    const lookup = new FakeBindingLookup();
    const err = await failure(resolveEnv(NS, 'w', spec({
      bindings: { ai: [{ name: 'AI', model: 'm' }], actors: [{ name: 'COUNTER', actor: 'counter' }] },
    }), lookup));
    expect(err.reason).toBe(RESOLVE_REASONS.ActorNotFound);
    expect(lookup.aiCalls.map((c) => c.bindings)).toEqual([['AI']]);
  });
});

describe('workerVersion', () => {
  const s = spec({});
  const env = { text: { A: '1' }, secrets: {}, actors: {}, ai: {} };
  const digest = sha256Digest('export default {}');
  const version = (d: string, sp: typeof s, e: typeof env, egress?: { publicInternet: boolean; allow: string[] }) =>
    workerVersion(d, sp, e, { ...builtinRunSettings(sp), ...(egress ? { egress } : {}) });

  it('is the value operators before the shared resolver published (an upgrade republishes nothing)', () => {
    expect(version(digest, s, env)).toBe('sha256:78c96c9e534264f6b2fd7f943e64fe0a57165b8110636b64718cce14e6e35cd2');
  });

  it('changes with the bundle, the env, the limits, the warm count and the egress policy', () => {
    const v = version(digest, s, env);
    expect(version(sha256Digest('other'), s, env)).not.toBe(v);
    expect(version(digest, s, { ...env, text: { A: '2' } })).not.toBe(v);
    expect(version(digest, s, { ...env, secrets: { B: '2' } })).not.toBe(v);
    // The sealed form (what the operator publishes) of no secrets is the same version.
    expect(workerVersion(digest, s, { text: { A: '1' }, sealed: {}, actors: {}, ai: {} } as never, builtinRunSettings(s))).toBe(v);
    expect(version(digest, spec({ limits: { cpuMsPerRequest: 10 } }), env)).not.toBe(v);
    expect(version(digest, spec({ placement: { minWarmIsolates: 3 } }), env)).not.toBe(v);
    expect(version(digest, s, env, { publicInternet: false, allow: [] })).not.toBe(v);
  });
});

describe('isolateWorkerEnv (the agent\'s last step)', () => {
  const env = {
    text: { A: '1' },
    secrets: {},
    actors: { COUNTER: { namespace: NS, actor: 'counter', uid: 'uid-1' } },
    ai: { AI: { model: 'm', services: { 'eu-west': { service: 'svc-eu', namespace: NS, port: 8000 } } } },
  };

  it('points each ai binding at this region\'s Service through the URL template, and keeps actor bindings', () => {
    expect(isolateWorkerEnv(env, 'eu-west', aiUrlFromTemplate())).toEqual({
      text: { A: '1' },
      ai: { AI: { model: 'm', url: `http://svc-eu.${NS}.svc.cluster.local:8000` } },
      actors: env.actors,
    });
    expect(isolateWorkerEnv(env, 'eu-west', aiUrlFromTemplate('http://127.0.0.1:9999/{binding}/{service}/{namespace}/{port}')).ai)
      .toEqual({ AI: { model: 'm', url: `http://127.0.0.1:9999/AI/svc-eu/${NS}/8000` } });
  });

  it('leaves the URL empty (calls fail saying so) in a region without a Service, rather than dropping the binding', () => {
    expect(isolateWorkerEnv(env, 'us-east', aiUrlFromTemplate()).ai).toEqual({ AI: { model: 'm', url: '' } });
  });
});
