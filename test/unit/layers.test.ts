import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

// The layer rules of docs/architecture.md are only worth something if `npm test` fails on
// a wrong-way import and on a cycle: these prove the checks it runs do.

const eslint = new ESLint({ cwd: process.cwd() });

async function lintAs(filePath: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath });
  return (result?.messages ?? []).map((m) => `${m.ruleId}: ${m.message}`);
}

describe('layer rules', { timeout: 60_000 }, () => {
  it('refuse an import that points up a layer, naming what the folder may import', async () => {
    const msgs = await lintAs('node-agent/isolate/probe.ts', "import { Router } from '../serving/router.js';\nexport const r = Router;\n");
    expect(msgs.join('\n')).toMatch(/no-restricted-paths: .*node-agent\/isolate\/ may import only common\/, node-agent\/abi\/, node-agent\/sockets\//);
  });

  it('refuse the isolate core building bindings, common/ importing the agent, the operator importing the agent', async () => {
    expect((await lintAs('node-agent/isolate/probe.ts', "import { hostBindings } from '../bindings/host-bindings.js';\nexport const b = hostBindings;\n")).join()).toMatch(/no-restricted-paths/);
    expect((await lintAs('common/probe.ts', "import { WorkerServer } from '../node-agent/serving/worker-server.js';\nexport const w = WorkerServer;\n")).join()).toMatch(/no-restricted-paths/);
    expect((await lintAs('operator/controllers/probe.ts', "import { ActorHost } from '../../node-agent/actors/host.js';\nexport const h = ActorHost;\n")).join()).toMatch(/no-restricted-paths/);
    expect((await lintAs('operator/runtime/probe.ts', "import { place } from '../controllers/placement.js';\nexport const p = place;\n")).join()).toMatch(/no-restricted-paths/);
  });

  it('allow the imports the layers are for', async () => {
    expect(await lintAs('node-agent/actors/probe.ts', "import { hostBindings } from '../bindings/host-bindings.js';\nexport const b = hostBindings;\n")).toEqual([]);
    expect(await lintAs('node-agent/serving/probe.ts', "import { IsolatePool } from '../isolate/pool.js';\nexport const p = IsolatePool;\n")).toEqual([]);
  });

  it('keep client-node, esbuild and tsx off the agent\'s code path (the agent image has none), types allowed', async () => {
    const clientNode = "import { KubeConfig } from '@kubernetes/client-node';\nexport const k = KubeConfig;\n";
    expect((await lintAs('node-agent/serving/probe.ts', clientNode)).join()).toMatch(/no-restricted-imports: .*not on the agent's code path/);
    expect((await lintAs('common/probe.ts', "import { build } from 'esbuild';\nexport const b = build;\n")).join()).toMatch(/no-restricted-imports/);
    expect((await lintAs('cli/agent-probe.ts', clientNode)).join()).not.toMatch(/no-restricted-imports/);
    expect(await lintAs('node-agent/isolate/probe.ts', "import type { KubeConfig } from '@kubernetes/client-node';\nexport type K = KubeConfig;\n")).toEqual([]);
  });

  it('refuse production code importing a fake/ folder; fakes and tests may', async () => {
    expect((await lintAs('node-agent/actors/probe.ts', "import { FakeActorLog } from './fake/log.js';\nexport const l = FakeActorLog;\n")).join()).toMatch(/no-restricted-paths: .*fake\/ folder is for tests only/);
    expect((await lintAs('node-agent/probe.ts', "import { FakePeers } from './peer/fake/peers.js';\nexport const p = FakePeers;\n")).join()).toMatch(/no-restricted-paths/);
    expect(await lintAs('node-agent/actors/fake/probe.ts', "import { FakeActorLog } from './log.js';\nexport const l = FakeActorLog;\n")).toEqual([]);
    expect(await lintAs('test/unit/probe.ts', "import { FakeActorLog } from '../../node-agent/actors/fake/log.js';\nexport const l = FakeActorLog;\n")).toEqual([]);
  });

  it('refuse a bare kv.watch() outside the KV follower', async () => {
    const code = "import type { KV } from 'nats';\nexport const w = (kv: KV) => kv.watch({ key: '>' });\n";
    expect((await lintAs('node-agent/control/probe.ts', code)).join()).toMatch(/no-restricted-syntax: read a KV bucket with followBucket/);
    expect(await lintAs('common/kv-follower.ts', code)).not.toContainEqual(expect.stringMatching(/no-restricted-syntax/));
  });

  it('the cycle check fails on a cycle, type-only imports included', () => {
    const dir = mkdtempSync(join(tmpdir(), 'edge-cycle-'));
    writeFileSync(join(dir, 'a.ts'), "import type { B } from './b.js';\nexport interface A { b?: B }\n");
    writeFileSync(join(dir, 'b.ts'), "import type { A } from './a.js';\nexport interface B { a?: A }\n");
    const script = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> }).scripts['check:cycles']!;
    const cmd = script.replace(/'[^']*\*\*[^']*'/, `'${dir}/*.ts'`);
    expect(cmd).not.toBe(script);
    const run = spawnSync('npx', ['--no-install', ...cmd.split(' ').map((a) => a.replace(/^'|'$/g, ''))], { encoding: 'utf8' });
    expect(run.stdout).toMatch(/a\.ts -> .*b\.ts|b\.ts -> .*a\.ts/);
    expect(run.status).toBe(1);
  });
});
