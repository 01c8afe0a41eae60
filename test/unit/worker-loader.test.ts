import ivm from 'isolated-vm';
import { describe, expect, it } from 'vitest';
import { codeCacheStats, compileCached } from '../../node-agent/isolate/code-cache.js';
import { decodeModuleMap } from '../../common/module-map.js';
import type { LoaderCode } from '../../node-agent/abi/bridge.js';
import { OUTBOUND_BINDING, dynamicDefinition, dynamicSource } from '../../node-agent/bindings/worker-loader.js';
import type { WorkerDefinition } from '../../node-agent/isolate/worker-isolate.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EdgeWorkerSpecSchema } from '../../common/api/index.js';
import { loadWranglerProject } from '../../cli/wrangler-config.js';

// The host side of a Worker Loader's WorkerCode (bindings/worker-loader.ts): what a dynamic
// worker is made of is decided from the caller's definition, never from the code alone.

const parent: WorkerDefinition = {
  key: 'app/parent', name: 'app/parent', source: '', digest: 'sha256:p',
  limits: { cpuMsPerRequest: 100, memoryMiB: 128, subrequests: 10, wallMsPerRequest: 5000 },
  env: {
    text: { SECRET: 'parent only' },
    services: { MATH: { namespace: 'app', worker: 'math' }, GATE: { namespace: 'app', worker: 'gate', entrypoint: 'Gate' } },
    actors: { ROOMS: { namespace: 'app', actor: 'rooms', uid: 'u1' } },
    loaders: ['LOADER'],
  },
  egress: { publicInternet: false, allow: ['10.0.0.0/8'] },
};

const code = (over: Partial<LoaderCode> = {}): LoaderCode => ({
  compatibilityDate: '2025-06-01', compatibilityFlags: [], mainModule: 'index.js',
  modules: { 'index.js': ['js', 'export default {}'] }, values: '["O",[]]', caps: {}, refs: {}, outbound: 'default', limits: {}, ...over,
});

describe('dynamic worker definitions', () => {
  it('runs under the caller\'s key and egress policy, with none of its env but the capabilities passed', () => {
    const def = dynamicDefinition(parent, 'tool-1', code({ caps: { M: 'MATH', R: 'ROOMS', L: 'LOADER' }, values: '["O",[["X",1]]]' }));
    expect(def.key).toBe('app/parent');
    expect(def.name).toBe('app/parent#tool-1');
    expect(def.egress).toEqual(parent.egress);
    expect(def.env).toEqual({
      text: {}, values: '["O",[["X",1]]]',
      services: { M: { namespace: 'app', worker: 'math' } },
      actors: { R: { namespace: 'app', actor: 'rooms', uid: 'u1' } },
      loaders: ['L'],
    });
    expect(() => dynamicDefinition(parent, 'x', code({ caps: { S: 'SECRET' } }))).toThrow(/SECRET is not one of worker app\/parent's bindings/);
  });

  it('caps limits at the caller\'s, never above', () => {
    expect(dynamicDefinition(parent, 'x', code()).limits).toEqual(parent.limits);
    expect(dynamicDefinition(parent, 'x', code({ limits: { cpuMs: 10.2, subRequests: 3, memoryMiB: 32 } })).limits)
      .toEqual({ cpuMsPerRequest: 11, memoryMiB: 32, subrequests: 3, wallMsPerRequest: 5000 });
    expect(dynamicDefinition(parent, 'x', code({ limits: { cpuMs: 1e9, subRequests: 1e9, memoryMiB: 4096 } })).limits).toEqual(parent.limits);
    // V8 needs some heap: a tiny memory limit is raised to the API's minimum, still below the caller's.
    expect(dynamicDefinition(parent, 'x', code({ limits: { memoryMiB: 1 } })).limits.memoryMiB).toBe(16);
  });

  it('globalOutbound: null blocks; a service binding of the caller is kept out of env under a name code cannot choose', () => {
    expect(dynamicDefinition(parent, 'x', code({ outbound: 'block' })).env.outbound).toBe('block');
    const gated = dynamicDefinition(parent, 'x', code({ outbound: 'service:GATE' }));
    expect(gated.env.services).toEqual({ [OUTBOUND_BINDING]: { namespace: 'app', worker: 'gate', entrypoint: 'Gate' } });
    expect(gated.env.outbound).toBe(`service:${OUTBOUND_BINDING}`);
    expect(() => dynamicDefinition(parent, 'x', code({ outbound: 'service:ROOMS' }))).toThrow(/not one of worker app\/parent's service bindings/);
    expect(dynamicDefinition(parent, 'x', code()).env.outbound).toBeUndefined();
  });

  it('a single plain module is its own source; anything else is a module map with binary contents in base64', () => {
    expect(dynamicSource({ mainModule: 'a.js', modules: { 'a.js': ['js', 'export default 1'] } })).toBe('export default 1');
    const wasm = new Uint8Array([0, 97, 115, 109]).buffer;
    const src = dynamicSource({
      mainModule: 'a.js',
      modules: { 'a.js': ['js', 'import x from "./b.cjs"'], 'b.cjs': ['cjs', 'module.exports = 1'], 'c.txt': ['text', 'hi'], 'd.json': ['json', '{"k":[1]}'], 'e.wasm': ['wasm', wasm], 'f.bin': ['data', wasm] },
    });
    expect(decodeModuleMap(src)).toEqual({
      mainModule: 'a.js',
      modules: {
        'a.js': { js: 'import x from "./b.cjs"' }, 'b.cjs': { cjs: 'module.exports = 1' }, 'c.txt': { text: 'hi' },
        'd.json': { json: { k: [1] } }, 'e.wasm': { wasm: 'AGFzbQ==' }, 'f.bin': { data: 'AGFzbQ==' },
      },
    });
    expect(() => dynamicSource({ mainModule: 'a.js', modules: { 'b.js': ['js', ''] } })).toThrow(/mainModule "a.js" is not in modules/);
  });

  it('the same code under the same settings has one digest; other limits or env make another', () => {
    const a = dynamicDefinition(parent, 'x', code());
    expect(dynamicDefinition(parent, 'y', code()).digest).toBe(a.digest);
    expect(dynamicDefinition(parent, 'x', code({ limits: { cpuMs: 5 } })).digest).not.toBe(a.digest);
    expect(dynamicDefinition(parent, 'x', code({ values: '["O",[["X",2]]]' })).digest).not.toBe(a.digest);
  });
});

describe('wrangler worker_loaders', () => {
  it('maps to spec.bindings.workerLoaders, whose names the API checks', () => {
    const dir = mkdtempSync(join(tmpdir(), 'wrangler-loaders-'));
    try {
      writeFileSync(join(dir, 'index.js'), 'export default {}');
      writeFileSync(join(dir, 'wrangler.json'), JSON.stringify({ name: 'w', main: 'index.js', compatibility_date: '2025-06-01', worker_loaders: [{ binding: 'LOADER' }] }));
      const p = loadWranglerProject(join(dir, 'wrangler.json'));
      expect(p.spec.bindings?.workerLoaders).toEqual([{ name: 'LOADER' }]);
      expect(p.notes.join('\n')).not.toMatch(/worker_loaders/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const spec = { routes: [{ host: 'x.test' }], placement: {}, source: { inline: 'export default {}' }, bindings: { workerLoaders: [{ name: 'LOADER' }] } };
    expect(EdgeWorkerSpecSchema.safeParse(spec).success).toBe(true);
    expect(EdgeWorkerSpecSchema.safeParse({ ...spec, bindings: { workerLoaders: [{ name: 'not an identifier' }] } }).success).toBe(false);
  });
});

describe('the code cache', () => {
  it('the second isolate to compile a version consumes the first one\'s V8 code cache; small sources are not cached', async () => {
    const source = `export default { fetch() { return new Response('x'); } };\n${Array.from({ length: 200 }, (_, i) => `export function f${i}(x) { return x * ${i}; }`).join('\n')}`;
    const before = codeCacheStats();
    const isolates = [new ivm.Isolate({ memoryLimit: 32 }), new ivm.Isolate({ memoryLimit: 32 })];
    try {
      await compileCached(isolates[0]!, source, 'sha256:code-cache-test', 'a.js');
      expect(codeCacheStats().entries).toBe(before.entries + 1);
      const second = await compileCached(isolates[1]!, source, 'sha256:code-cache-test', 'a.js') as ivm.Module & { cachedDataRejected?: boolean };
      expect(second.cachedDataRejected).toBe(false);
      await compileCached(isolates[1]!, 'export default {}', 'sha256:small', 'b.js');
      expect(codeCacheStats().entries).toBe(before.entries + 1);
    } finally {
      for (const i of isolates) i.dispose();
    }
  });
});
