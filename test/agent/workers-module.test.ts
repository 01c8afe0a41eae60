import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bundleWorker } from '../../cli/deploy.js';
import { IsolatePool } from '../../node-agent/isolate/pool.js';
import { hostBindings } from '../../node-agent/bindings/host-bindings.js';
import { BundleError, WorkerIsolate } from '../../node-agent/isolate/worker-isolate.js';
import { LIMITS, startRpcRig, type RpcRig } from './rpc-harness.js';

// The cloudflare:workers module: `edge deploy`'s bundler keeps it an import and the isolate
// resolves it; a worker written exactly as Cloudflare's docs write it runs unmodified.

const dir = mkdtempSync(join(tmpdir(), 'edge-workers-module-'));
const rigs: RpcRig[] = [];
afterAll(async () => {
  for (const r of rigs) await r.close();
  rmSync(dir, { recursive: true, force: true });
});

async function bundle(name: string, source: string): Promise<string> {
  const file = join(dir, name);
  writeFileSync(file, source);
  const out = await bundleWorker(file);
  if ('errors' in out) throw new Error(out.errors);
  return out.code;
}

// developers.cloudflare.com/durable-objects/get-started/ (as of 2025), unmodified but for the binding's name.
const DOCS_EXAMPLE = `
import { DurableObject } from "cloudflare:workers";

export class MyDurableObject extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
  }

  async sayHello(name) {
    return \`Hello, \${name}!\`;
  }
}

export default {
  async fetch(request, env, ctx) {
    const stub = env.MY_DURABLE_OBJECT.getByName("foo");
    const greeting = await stub.sayHello("world");
    return new Response(greeting);
  },
};
`;

describe('cloudflare:workers', () => {
  it('bundles and runs Cloudflare\'s Durable Objects example unmodified', async () => {
    const code = await bundle('docs.js', DOCS_EXAMPLE);
    expect(code).toMatch(/from\s*"cloudflare:workers"/);
    const rig = await startRpcRig(code, 'MyDurableObject', 'MY_DURABLE_OBJECT');
    rigs.push(rig);
    expect(await rig.call('/')).toEqual({ status: 200, text: 'Hello, world!' });
  });

  it('refuses a cloudflare: module it does not provide, naming it, at bundle time', async () => {
    const file = join(dir, 'sockets.js');
    writeFileSync(file, 'import { connect } from "cloudflare:sockets";\nexport default { fetch() { return new Response(String(connect)); } };\n');
    const out = await bundleWorker(file);
    expect('errors' in out && out.errors).toContain('"cloudflare:sockets" is not a module this runtime provides (it provides cloudflare:workers, cloudflare:email)');
  });

  it('refuses any other import when the module loads', async () => {
    const pool = new IsolatePool({ size: 1, defaultMemoryMiB: 64 });
    await pool.start();
    try {
      const def = { key: 'ns/imp', name: 'imp', source: 'import x from "cloudflare:sockets";\nexport default { fetch() { return new Response(x); } };', digest: 'sha256:x', limits: LIMITS, env: { text: {} } };
      const err = await WorkerIsolate.load(def, pool.take(64), { onLog: () => undefined, onDispose: () => undefined, bindings: hostBindings() }).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(BundleError);
      expect((err as Error).message).toContain('imports "cloudflare:sockets"');
    } finally {
      pool.close();
    }
  });

  it('serves a default export extending WorkerEntrypoint, with ctx, env, and the env and waitUntil exports', async () => {
    const rig = await startRpcRig(`
import { WorkerEntrypoint, DurableObject, env, waitUntil } from 'cloudflare:workers';
export class Obj extends DurableObject {}
let waited = 'no';
export default class extends WorkerEntrypoint {
  async fetch(request) {
    waitUntil(Promise.resolve().then(() => { waited = 'yes'; }));
    const previous = waited;
    return Response.json({
      path: new URL(request.url).pathname, greeting: this.env.GREETING, importedEnv: env.GREETING,
      ctx: typeof this.ctx.waitUntil, previous, entrypoint: this instanceof WorkerEntrypoint,
      globals: Object.getOwnPropertyNames(globalThis).filter((n) => n.startsWith('__edge')),
      frozen: Object.isFrozen(WorkerEntrypoint.prototype),
    });
  }
}`, 'Obj');
    rigs.push(rig);
    const first = JSON.parse((await rig.call('/a')).text) as Record<string, unknown>;
    expect(first).toEqual({ path: '/a', greeting: 'hi', importedEnv: 'hi', ctx: 'function', previous: 'no', entrypoint: true, globals: [], frozen: true });
    const second = JSON.parse((await rig.call('/b')).text) as Record<string, unknown>;
    expect(second.previous).toBe('yes');
  });

  it('fails a derived class that never calls super() as the engine does, with the engine\'s own ReferenceError', async () => {
    const rig = await startRpcRig(`
import { DurableObject } from 'cloudflare:workers';
export class NoSuper extends DurableObject { constructor(ctx, env) { } hello() { return 'never'; } }
export class Plain { constructor(state, env) { this.state = state; } async fetch() { return new Response('plain ' + typeof this.state.storage.get); } }
export default {
  async fetch(request, env) {
    try { return new Response(await env.OBJ.getByName('x').hello()); } catch (e) { return new Response(e.name + ': ' + e.message); }
  },
};`, 'NoSuper');
    rigs.push(rig);
    const r = await rig.call('/');
    expect(r.text).toMatch(/ReferenceError: Must call super constructor in derived class/);
  });

  it('keeps the RPC method out of reach of a worker\'s own requests', async () => {
    const rig = await startRpcRig(`
import { DurableObject } from 'cloudflare:workers';
export class Obj extends DurableObject { secret() { return 'reached'; } async fetch(req) { return new Response('fetch ' + req.method); } }
export default {
  async fetch(request, env) {
    const stub = env.OBJ.getByName('x');
    const out = [];
    for (const method of ['EDGE:RPC', 'edge:rpc']) {
      try { out.push(await (await stub.fetch('http://x/', { method, body: JSON.stringify({ t: 0, k: 'call', n: 'secret' }) })).text()); } catch (e) { out.push(e.name + ': ' + e.message); }
    }
    return Response.json(out);
  },
};`, 'Obj');
    rigs.push(rig);
    const out = JSON.parse((await rig.call('/')).text) as string[];
    for (const o of out) expect(o).toMatch(/^TypeError: Invalid HTTP method/);
  });
});

describe('examples/rpc', () => {
  it('runs: a room Durable Object called by RPC (pipelined through its RpcTarget), users behind a service binding', async () => {
    const code = async (f: string) => {
      const out = await bundleWorker(join(import.meta.dirname, '../../examples/rpc', f));
      if ('errors' in out) throw new Error(out.errors);
      return out.code;
    };
    const rig = await startRpcRig(await code('app.js'), 'Room', 'ROOMS', { USERS: await code('users.js') });
    rigs.push(rig);
    const post = await rig.call('/lobby?user=ada&message=hi', 'POST');
    expect(post.status, post.text).toBe(200);
    const body = JSON.parse(post.text) as { room: string; entries: { name: string; message: string; at: string }[] };
    expect(body.room).toBe('lobby');
    expect(body.entries).toMatchObject([{ name: 'Ada Lovelace', message: 'hi' }]);
    expect(await rig.call('/lobby?user=bob', 'POST')).toEqual({ status: 404, text: 'RangeError: no user bob\n' });
    expect((JSON.parse((await rig.call('/lobby')).text) as { entries: unknown[] }).entries).toHaveLength(1);
  });

  it('bundles and loads both workers, keeping cloudflare:workers an import', async () => {
    const pool = new IsolatePool({ size: 1, defaultMemoryMiB: 64 });
    await pool.start();
    try {
      for (const f of ['users.js', 'app.js']) {
        const out = await bundleWorker(join(import.meta.dirname, '../../examples/rpc', f));
        if ('errors' in out) throw new Error(out.errors);
        const def = { key: `ex/${f}`, name: f, source: out.code, digest: 'sha256:x', limits: LIMITS, env: { text: {} } };
        const w = await WorkerIsolate.load(def, pool.take(64), { onLog: () => undefined, onDispose: () => undefined, bindings: hostBindings() });
        w.dispose('shutdown');
      }
    } finally {
      pool.close();
    }
  });
});
