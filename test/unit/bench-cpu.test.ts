import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  cpuDelta, descendants, expandCpuList, maybePinned, parseCpuStat, parseCpusAllowed, parseProcStat, readAllProcStats,
  tasksetArgv, tasksetMissing, threadSplit, treeAffinity, treeCpuSeconds, treeTicks, type ProcStat,
} from '../../bench/cpu.js';
import type { LoadResult } from '../../bench/load.js';
import { combineLoads, spreadNamespaces } from '../../bench/percore.js';
import { sleep } from '../../bench/procs.js';
import { isolateHostIndex } from '../../common/isolate-hosts.js';

// The pure parts of the per-core bench (bench/percore.ts, bench/cpu.ts): /proc parsing, CPU
// summed over a process tree, taskset command lines; and, where taskset exists, that a
// process tree started under it is pinned all the way down. No timing is asserted.

const stat = (pid: number, ppid: number, utime: number, stime: number, cutime = 0, cstime = 0, comm = 'node'): string =>
  `${pid} (${comm}) S ${ppid} ${pid} ${pid} 0 -1 4194304 1200 0 0 0 ${utime} ${stime} ${cutime} ${cstime} 20 0 11 0 4242 1000000 5000`;

describe('bench/cpu: /proc parsing', () => {
  it('reads pid, parent, group and the four CPU times of a stat line', () => {
    expect(parseProcStat(stat(42, 7, 150, 30, 12, 3))).toEqual({
      pid: 42, comm: 'node', state: 'S', ppid: 7, pgrp: 42, utime: 150, stime: 30, cutime: 12, cstime: 3,
    });
  });

  it('counts fields from the last ")" so a command name with spaces and parentheses does not shift them', () => {
    const p = parseProcStat(stat(9, 1, 5, 6, 0, 0, 'a) (b c'));
    expect(p.comm).toBe('a) (b c');
    expect([p.ppid, p.utime, p.stime]).toEqual([1, 5, 6]);
  });

  it('refuses what is not a stat line', () => {
    expect(() => parseProcStat('garbage')).toThrow(/not a \/proc/);
    expect(() => parseProcStat('1 (x) S 0 1 1 0 -1 0 0 0 0 0 nope 2 0 0')).toThrow(/field 14/);
  });

  it('reads Cpus_allowed_list from a status file', () => {
    const status = 'Name:\tnode\nCpus_allowed:\t2\nCpus_allowed_list:\t1\nMems_allowed_list:\t0\n';
    expect(parseCpusAllowed(status)).toBe('1');
    expect(parseCpusAllowed('Cpus_allowed_list:\t0-1\n')).toBe('0-1');
    expect(parseCpusAllowed('Name:\tx\n')).toBeUndefined();
  });

  it('reads per-CPU busy, idle and steal ticks from /proc/stat, leaving out the all-CPU line and guest time', () => {
    const text = 'cpu  20 0 10 100 5 0 0 4 0 0\ncpu0 10 1 5 50 2 1 1 3 7 0\ncpu1 10 0 5 50 3 0 0 1 0 0\nintr 1 2\n';
    const m = parseCpuStat(text);
    expect([...m.keys()]).toEqual([0, 1]);
    expect(m.get(0)).toEqual({ busy: 10 + 1 + 5, irq: 1 + 1, idle: 52, steal: 3 });
    expect(m.get(1)).toEqual({ busy: 15, irq: 0, idle: 53, steal: 1 });
  });

  it('expands taskset CPU lists and takes the difference of two /proc/stat reads over some CPUs', () => {
    expect(expandCpuList('1')).toEqual([1]);
    expect(expandCpuList('0-2,5')).toEqual([0, 1, 2, 5]);
    expect(() => expandCpuList('2-1')).toThrow();
    expect(() => expandCpuList('x')).toThrow();
    const a = parseCpuStat('cpu0 10 0 0 10 0 0 0 0\ncpu1 10 0 0 10 0 0 0 0\n');
    const b = parseCpuStat('cpu0 30 0 0 15 0 0 4 1\ncpu1 11 0 0 99 0 0 0 0\n');
    expect(cpuDelta(a, b, [0])).toEqual({ busy: 20, irq: 4, idle: 5, steal: 1 });
    expect(cpuDelta(a, b, [0, 1])).toEqual({ busy: 21, irq: 4, idle: 94, steal: 1 });
  });
});

describe('bench/cpu: a process tree', () => {
  // 10 (server) -> 11 (host) -> 13 (its child); 10 -> 12 (host); 20 is someone else's, 1 is init.
  const all: ProcStat[] = [
    stat(1, 0, 1000, 1000), stat(10, 1, 100, 20, 7, 1), stat(11, 10, 300, 30), stat(12, 10, 50, 5),
    stat(13, 11, 2, 1), stat(20, 1, 999, 999),
  ].map(parseProcStat);

  it('finds the root and every descendant by parent pid, and nothing else', () => {
    expect(descendants(all, 10).map((p) => p.pid).sort((x, y) => x - y)).toEqual([10, 11, 12, 13]);
    expect(descendants(all, 11).map((p) => p.pid)).toEqual([11, 13]);
    expect(descendants(all, 99)).toEqual([]);
  });

  it('sums utime + stime + reaped children (cutime + cstime) over the tree', () => {
    expect(treeTicks(descendants(all, 10))).toBe(100 + 20 + 7 + 1 + 300 + 30 + 50 + 5 + 2 + 1);
    expect(treeTicks([])).toBe(0);
  });

  it('splits CPU by process role and thread name between two reads, new threads counted from zero', () => {
    const before = new Map([['10/10', { ticks: 100 }], ['10/14', { ticks: 5 }], ['11/11', { ticks: 50 }], ['11/15', { ticks: 7 }]]);
    const after = new Map([
      ['10/10', { pid: 10, main: true, comm: 'node', ticks: 160 }], ['10/14', { pid: 10, main: false, comm: 'V8 Worker', ticks: 5 }],
      ['11/11', { pid: 11, main: true, comm: 'node', ticks: 90 }], ['11/15', { pid: 11, main: false, comm: 'node', ticks: 17 }],
      ['11/16', { pid: 11, main: false, comm: 'node', ticks: 3 }], ['12/12', { pid: 12, main: true, comm: 'node', ticks: 1 }],
    ]);
    expect(threadSplit(before, after, (pid) => (pid === 10 ? 'front' : 'host'))).toEqual([
      { what: 'front main thread', ticks: 60 }, { what: 'host main thread', ticks: 41 }, { what: 'host node threads', ticks: 13 },
    ]);
  });

  it('survives a parent-pid loop without going round forever', () => {
    const loop = [stat(5, 6, 1, 0), stat(6, 5, 1, 0)].map(parseProcStat);
    expect(descendants(loop, 5).map((p) => p.pid)).toEqual([5, 6]);
  });

  it('reads this process from the real /proc', () => {
    expect(readAllProcStats().some((p) => p.pid === process.pid)).toBe(true);
    const own = treeCpuSeconds(process.pid);
    expect(own.processes).toBeGreaterThanOrEqual(1);
    expect(own.seconds).toBeGreaterThan(0);
  });
});

describe('bench/cpu: taskset', () => {
  it('builds `taskset -c CPUS CMD ARGS` and leaves a command alone without CPUs', () => {
    expect(tasksetArgv('1', '/usr/bin/node', ['bin/edge.mjs', 'agent'])).toEqual(['taskset', ['-c', '1', '/usr/bin/node', 'bin/edge.mjs', 'agent']]);
    expect(tasksetArgv('0-1', 'wrk', [])).toEqual(['taskset', ['-c', '0-1', 'wrk']]);
    expect(maybePinned(undefined, 'workerd', ['serve', 'x.capnp'])).toEqual(['workerd', ['serve', 'x.capnp']]);
    expect(maybePinned('0', 'workerd', ['serve'])).toEqual(['taskset', ['-c', '0', 'workerd', 'serve']]);
  });

  it('refuses a CPU list that taskset would read as an option or a mask', () => {
    for (const bad of ['', '-p', '1 2', 'all', '0x3', '1;rm']) expect(() => tasksetArgv(bad, 'x', [])).toThrow(/not a CPU list/);
  });

  it.skipIf(tasksetMissing() !== null)('pins a started process and every process it starts, threads included', async () => {
    const [cmd, args] = tasksetArgv('0', 'sh', ['-c', 'sleep 30 & sleep 30 & wait']);
    const child = spawn(cmd, args, { stdio: 'ignore', detached: true });
    const sleeps = (t: { comm: string }[]): number => t.filter((p) => p.comm === 'sleep').length;
    try {
      // A forked child is listed as sh until it execs sleep: wait for both execs.
      let tree = treeAffinity(child.pid ?? -1);
      for (let i = 0; i < 250 && sleeps(tree) < 2; i++) { await sleep(20); tree = treeAffinity(child.pid ?? -1); }
      expect(tree.length).toBe(3);
      for (const p of tree) {
        expect(p.cpus).toBe('0');
        expect(p.threadsElsewhere).toBe(0);
      }
      expect(sleeps(tree)).toBe(2);
    } finally { try { process.kill(-(child.pid ?? 0), 'SIGKILL'); } catch { /* gone */ } }
  });
});

describe('bench/percore: helpers', () => {
  const load = (rps: number, p50: number, p99: number, cpu?: number): LoadResult => ({
    tool: 'autocannon', requests: rps * 10, durationS: 10, rps, p50Ms: p50, p99Ms: p99, errors: 1, non2xx: 0, ...(cpu !== undefined ? { loadgenCpuS: cpu } : {}),
  });

  it('combines loads run at once: requests and req/s summed, the worst percentiles', () => {
    expect(combineLoads([load(100, 2, 9, 1), load(50, 3, 7, 2)])).toEqual({
      tool: 'autocannon', requests: 1500, durationS: 10, rps: 150, p50Ms: 3, p99Ms: 9, errors: 2, non2xx: 0, loadgenCpuS: 3,
    });
    expect(combineLoads([load(100, 2, 9)])).toEqual(load(100, 2, 9));
    expect('loadgenCpuS' in combineLoads([load(1, 1, 1, 1), load(1, 1, 1)])).toBe(false);
  });

  it('puts each script in a namespace of its own host when there are enough hosts', () => {
    const two = spreadNamespaces(['hello', 'json'], 2);
    expect(new Set([...two.values()].map((ns) => isolateHostIndex(ns, 2)))).toEqual(new Set([0, 1]));
    expect(new Set(two.values()).size).toBe(2);
    const one = spreadNamespaces(['hello', 'json'], 1);
    expect(new Set(one.values()).size).toBe(2);
  });
});
