import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { EdgeWorkerSchema } from '../../common/api/index.js';
import { processTree } from '../../bench/procs.js';
import { egressTargets, soakManifests, soakWorkers } from '../../bench/soak-workers.js';

// What the soak (bench/soak.ts) relies on without running it: its tenants are valid
// EdgeWorkers as written, the wasm bomb's hand-assembled module is a real module, and the
// agent's descendants are found through /proc.

interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}

const workers = soakWorkers({ sinkUrl: 'http://127.0.0.1:1/sink', sinkMiB: 8, targets: egressTargets({ port: 1, adminPort: 2, peerPort: 3 }) });

describe('soak setup', () => {
  it('writes every tenant as a valid EdgeWorker in its own namespace, with its memory limit stated', () => {
    const docs = parseAllDocuments(soakManifests(workers)).map((d) => EdgeWorkerSchema.parse(d.toJS()));
    expect(docs.map((d) => d.metadata.name)).toEqual(workers.map((w) => w.name));
    expect(new Set(docs.map((d) => d.metadata.namespace)).size).toBe(workers.length);
    for (const [i, d] of docs.entries()) expect(d.spec.limits?.memoryMiB).toBe(workers[i]?.limits.memoryMiB);
  });

  it("compiles the wasm bomb's module: a memory growable to 4 GiB, and memory.grow from inside", () => {
    const source = workers.find((w) => w.name === 'wasm')?.source ?? '';
    const bytes = /new Uint8Array\(\[([\d,]+)\]\)/.exec(source)?.[1]?.split(',').map(Number) ?? [];
    // This project's TypeScript lib has no WebAssembly types; the part used here.
    const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
    const inst = new wasm.Instance(new wasm.Module(new Uint8Array(bytes)), {});
    const { m, g } = inst.exports as { m: { buffer: ArrayBuffer }; g: (pages: number) => number };
    expect(m.buffer.byteLength).toBe(65536);
    expect(g(1)).toBe(1);
    expect(m.buffer.byteLength).toBe(2 * 65536);
  });

  it('finds a process and its descendants in /proc', async () => {
    const child = spawn('sh', ['-c', 'sleep 30 & wait'], { stdio: 'ignore' });
    try {
      // The forked child is listed as `sh` until its exec of sleep completes, so wait
      // for the exec, not merely for a second process.
      const hasSleep = (t: ReturnType<typeof processTree>): boolean => t.some((p) => p.comm === 'sleep' && p.ppid === child.pid);
      let tree: ReturnType<typeof processTree> = [];
      for (let i = 0; i < 250 && !hasSleep(tree); i++) {
        tree = processTree(child.pid ?? -1);
        if (!hasSleep(tree)) await new Promise((r) => setTimeout(r, 20));
      }
      expect(tree[0]?.pid).toBe(child.pid);
      expect(hasSleep(tree)).toBe(true);
      expect(tree.every((p) => p.rssKiB > 0)).toBe(true);
    } finally {
      for (const p of processTree(child.pid ?? -1).reverse()) { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } }
    }
  });
});
