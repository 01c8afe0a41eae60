import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { expandCpuList, parseCpusAllowed } from '../common/cpu-list.js';

export { expandCpuList, parseCpusAllowed };

// CPU time of a server's whole process tree from /proc, and the taskset(1) command lines
// that pin a server and a load generator to a core each (bench/percore.ts). The parsers and
// sums are pure, for test/unit/bench-cpu.test.ts; the readers below them touch /proc.

/** The fields of /proc/<pid>/stat the bench uses; times in clock ticks (CLK_TCK). */
export interface ProcStat {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
  pgrp: number;
  utime: number;
  stime: number;
  /** CPU of children this process has waited for (reaped): their time is not lost when they exit. */
  cutime: number;
  cstime: number;
}

/**
 * Parses one /proc/<pid>/stat line. The command name is in parentheses and may itself hold
 * spaces and ')' (a thread named "a) b"), so the fields are counted from the last ')'.
 */
export function parseProcStat(text: string): ProcStat {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw new Error(`not a /proc/<pid>/stat line: ${JSON.stringify(text.slice(0, 80))}`);
  // After "(comm) ": state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8) flags(9) minflt(10)
  // cminflt(11) majflt(12) cmajflt(13) utime(14) stime(15) cutime(16) cstime(17) ...
  const rest = text.slice(close + 2).trim().split(/\s+/);
  const n = (i: number): number => {
    const v = Number(rest[i]);
    if (!Number.isFinite(v)) throw new Error(`/proc/<pid>/stat: field ${i + 3} is not a number: ${JSON.stringify(text.slice(0, 120))}`);
    return v;
  };
  return {
    pid: Number(text.slice(0, open).trim()), comm: text.slice(open + 1, close), state: rest[0] ?? '?',
    ppid: n(1), pgrp: n(2), utime: n(11), stime: n(12), cutime: n(13), cstime: n(14),
  };
}

/** `root` and every process descended from it by parent pid, root first; empty when root is not among them. */
export function descendants(all: readonly ProcStat[], root: number): ProcStat[] {
  const byPid = new Map(all.map((p) => [p.pid, p]));
  const children = new Map<number, ProcStat[]>();
  for (const p of all) {
    if (p.pid === p.ppid) continue;
    const list = children.get(p.ppid) ?? [];
    list.push(p);
    children.set(p.ppid, list);
  }
  const start = byPid.get(root);
  if (!start) return [];
  const out: ProcStat[] = [];
  const seen = new Set<number>();
  const queue = [start];
  while (queue.length) {
    const p = queue.shift();
    if (!p || seen.has(p.pid)) continue;
    seen.add(p.pid);
    out.push(p);
    queue.push(...(children.get(p.pid) ?? []));
  }
  return out;
}

/**
 * CPU ticks a process tree has used: each live process's own utime + stime plus what it
 * reaped from children that have exited (cutime + cstime), so a host process that died
 * between two reads still counts once its parent waited for it.
 */
export function treeTicks(tree: readonly ProcStat[]): number {
  return tree.reduce((sum, p) => sum + p.utime + p.stime + p.cutime + p.cstime, 0);
}

/** `taskset -c CPUS CMD ARGS...`: CMD starts with its affinity set to CPUS, and every process it starts inherits it. */
export function tasksetArgv(cpus: string, cmd: string, args: readonly string[]): [string, string[]] {
  if (!/^\d+([-,]\d+)*$/.test(cpus)) throw new Error(`taskset: "${cpus}" is not a CPU list (e.g. 0, 1 or 0-1)`);
  return ['taskset', ['-c', cpus, cmd, ...args]];
}

/** A command line, or a taskset one when `cpus` is set (undefined: the command as given). */
export function maybePinned(cpus: string | undefined, cmd: string, args: readonly string[]): [string, string[]] {
  return cpus === undefined ? [cmd, [...args]] : tasksetArgv(cpus, cmd, args);
}

/**
 * Ticks of one CPU line of /proc/stat: busy in processes (user, nice, system), in interrupts
 * (irq, softirq: much of loopback TCP runs there, charged to no process), idle (idle,
 * iowait), steal (the hypervisor ran someone else).
 */
export interface CpuTicks { busy: number; irq: number; idle: number; steal: number }

/**
 * The per-CPU lines of /proc/stat ("cpu0 user nice system idle iowait irq softirq steal
 * guest guest_nice"), by CPU number; guest time is left out (it is already in user).
 */
export function parseCpuStat(text: string): Map<number, CpuTicks> {
  const out = new Map<number, CpuTicks>();
  for (const line of text.split('\n')) {
    const m = /^cpu(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const v = (m[2] ?? '').trim().split(/\s+/).map(Number);
    const f = (i: number): number => v[i] ?? 0;
    out.set(Number(m[1]), { busy: f(0) + f(1) + f(2), irq: f(5) + f(6), idle: f(3) + f(4), steal: f(7) });
  }
  return out;
}

/** What `cpus` did between two /proc/stat reads, summed over them, in ticks. */
export function cpuDelta(before: Map<number, CpuTicks>, after: Map<number, CpuTicks>, cpus: readonly number[]): CpuTicks {
  const d: CpuTicks = { busy: 0, irq: 0, idle: 0, steal: 0 };
  for (const c of cpus) {
    const a = before.get(c);
    const b = after.get(c);
    if (!a || !b) continue;
    d.busy += b.busy - a.busy;
    d.irq += b.irq - a.irq;
    d.idle += b.idle - a.idle;
    d.steal += b.steal - a.steal;
  }
  return d;
}

// ---------------------------------------------------------------- readers of /proc

/** The per-CPU ticks of /proc/stat now. */
export function readCpuStat(): Map<number, CpuTicks> {
  return parseCpuStat(readFileSync('/proc/stat', 'utf8'));
}

let clkTck: number | undefined;
/** Clock ticks a second, the unit of /proc/<pid>/stat's times (almost always 100). */
export function ticksPerSecond(): number {
  if (clkTck === undefined) {
    try { clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5000 }).trim()) || 100; } catch { clkTck = 100; }
  }
  return clkTck;
}

/** Every process's stat (threads are not listed here; a process's times include its threads'). */
export function readAllProcStats(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try { out.push(parseProcStat(readFileSync(`/proc/${entry}/stat`, 'utf8'))); } catch { /* exited while we looked */ }
  }
  return out;
}

/** CPU seconds the tree under `pid` has used so far, and how many processes it has now. */
export function treeCpuSeconds(pid: number): { seconds: number; processes: number } {
  const tree = descendants(readAllProcStats(), pid);
  return { seconds: treeTicks(tree) / ticksPerSecond(), processes: tree.length };
}

export interface ThreadTicks { pid: number; main: boolean; comm: string; ticks: number }

/**
 * utime + stime of every thread of `pids` by "pid/tid", with the thread's name (V8 names its
 * platform workers; node's other threads, isolated-vm's included, are all "node") and
 * whether it is the process's main thread (tid = pid: the event loop).
 */
export function readThreadTicks(pids: readonly number[]): Map<string, ThreadTicks> {
  const out = new Map<string, ThreadTicks>();
  for (const pid of pids) {
    let tids: string[];
    try { tids = readdirSync(`/proc/${pid}/task`); } catch { continue; }
    for (const tid of tids) {
      try {
        const t = parseProcStat(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'));
        out.set(`${pid}/${tid}`, { pid, main: Number(tid) === pid, comm: t.comm, ticks: t.utime + t.stime });
      } catch { /* thread exited */ }
    }
  }
  return out;
}

/**
 * CPU ticks between two thread reads, summed by `label(pid)` and thread (the main thread,
 * or the other threads by name), largest first (a thread that exited between the reads is
 * missing from this split).
 */
export function threadSplit(before: Map<string, { ticks: number }>, after: Map<string, ThreadTicks>, label: (pid: number) => string): { what: string; ticks: number }[] {
  const sums = new Map<string, number>();
  for (const [key, t] of after) {
    const d = t.ticks - (before.get(key)?.ticks ?? 0);
    if (d <= 0) continue;
    const what = `${label(t.pid)} ${t.main ? 'main thread' : `${t.comm} threads`}`;
    sums.set(what, (sums.get(what) ?? 0) + d);
  }
  return [...sums].map(([what, ticks]) => ({ what, ticks })).sort((a, b) => b.ticks - a.ticks);
}

export interface Affinity { pid: number; comm: string; cpus: string; threads: number; threadsElsewhere: number }

/**
 * The CPU list every process of the tree under `pid` may run on, and how many of its threads
 * may run elsewhere (a thread that called sched_setaffinity itself would show up there).
 */
export function treeAffinity(pid: number): Affinity[] {
  const out: Affinity[] = [];
  for (const p of descendants(readAllProcStats(), pid)) {
    try {
      const cpus = parseCpusAllowed(readFileSync(`/proc/${p.pid}/status`, 'utf8')) ?? '?';
      let threads = 0;
      let threadsElsewhere = 0;
      for (const tid of readdirSync(`/proc/${p.pid}/task`)) {
        try {
          const t = parseCpusAllowed(readFileSync(`/proc/${p.pid}/task/${tid}/status`, 'utf8'));
          threads++;
          if (t !== cpus) threadsElsewhere++;
        } catch { /* thread exited */ }
      }
      out.push({ pid: p.pid, comm: p.comm, cpus, threads, threadsElsewhere });
    } catch { /* exited while we looked */ }
  }
  return out;
}

/** Null when taskset(1) is on PATH; otherwise why not. */
export function tasksetMissing(): string | null {
  const r = spawnSync('sh', ['-c', 'command -v taskset'], { encoding: 'utf8', timeout: 5000 });
  return r.status === 0 ? null : 'taskset is not installed (util-linux: `apt-get install -y util-linux`)';
}
