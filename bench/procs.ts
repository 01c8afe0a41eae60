import { readFileSync, readdirSync } from 'node:fs';
import { killAllManaged, type ManagedProcess } from '../cli/local/process.js';

export { freePort } from '../cli/local/ports.js';

// Child processes of the bench are cli/local's ManagedProcess: each in its own process
// group under `setpriv --pdeathsig KILL`, logged to a file, killed as a group on stop,
// on error and on exit; the bench also kills them on SIGINT/SIGTERM/SIGHUP.

export { ManagedProcess as Proc, type SpawnOptions } from '../cli/local/process.js';
type Proc = ManagedProcess;

let signalsHooked = false;
export function killChildrenOnSignals(): void {
  if (signalsHooked) return;
  signalsHooked = true;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      const n = killAllManaged();
      process.stderr.write(`\nbench: ${sig}, killed ${n} child process group(s)\n`);
      process.exit(130);
    });
  }
}

export async function stopAll(procs: Iterable<Proc | undefined>): Promise<void> {
  await Promise.all([...procs].map((p) => p?.stop()));
}

/**
 * The memory of process group `pgid` (the peer and any children), in KiB: RSS summed over
 * its processes, and PSS (/proc/N/smaps_rollup), where a page several processes share (the
 * node binary's text, the same library) is split between them, so the group's sum counts it
 * once, as the pod's memory cgroup does. For a group of one process the two differ only by
 * what it shares with processes outside it.
 */
export function groupRssKiB(pgid: number): GroupMemory {
  let kib = 0;
  let pssKiB = 0;
  let processes = 0;
  let privateKiB = 0;
  const sharedByFile = new Map<string, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // fields after "(comm)": state ppid pgrp ...
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(rest[2]) !== pgid) continue;
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${entry}/status`, 'utf8'));
      if (!m) continue; // zombie or kernel thread
      const pss = /^Pss:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${entry}/smaps_rollup`, 'utf8'));
      const own = ownPages(readFileSync(`/proc/${entry}/smaps`, 'utf8'));
      kib += Number(m[1]);
      pssKiB += Number(pss?.[1] ?? m[1]);
      privateKiB += own.privateKiB;
      for (const [file, k] of own.sharedByFile) sharedByFile.set(file, Math.max(sharedByFile.get(file) ?? 0, k));
      processes++;
    } catch { /* exited while we looked */ }
  }
  let ownKiB = privateKiB;
  for (const k of sharedByFile.values()) ownKiB += k;
  return { kib, pssKiB, ownKiB, processes };
}

export interface GroupMemory {
  kib: number;
  pssKiB: number;
  /**
   * The group counted on its own: every process's private pages, plus each file's shared
   * pages once (the most any one process of the group has resident). PSS splits a shared
   * page with every process that maps it, those outside the group too: three idle `node`
   * processes beside an idle agent took 15 MiB off its PSS (the node binary's text), and the
   * bench's own npm, tsx and harness are three. This does not depend on what else runs.
   */
  ownKiB: number;
  processes: number;
}

/** One process's private pages, and its shared resident pages per mapped file (/proc/N/smaps). */
function ownPages(smaps: string): { privateKiB: number; sharedByFile: Map<string, number> } {
  let privateKiB = 0;
  const sharedByFile = new Map<string, number>();
  let file = '';
  for (const line of smaps.split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) { file = head[1] ?? ''; continue; }
    const f = /^(Private_Clean|Private_Dirty|Shared_Clean|Shared_Dirty):\s+(\d+) kB/.exec(line);
    if (!f) continue;
    const k = Number(f[2]);
    if (f[1]!.startsWith('Private')) privateKiB += k;
    // Anonymous shared pages (none in a tree of exec'd processes) are taken as the process's own.
    else if (file === '' || file.startsWith('[')) privateKiB += k;
    else sharedByFile.set(file, (sharedByFile.get(file) ?? 0) + k);
  }
  return { privateKiB, sharedByFile };
}

/** Median RSS of `samples` reads `intervalMs` apart, after waiting `settleMs`. */
export async function settledRssKiB(proc: Proc, settleMs: number, samples = 5, intervalMs = 200): Promise<GroupMemory> {
  await sleep(settleMs);
  const reads: GroupMemory[] = [];
  for (let i = 0; i < samples; i++) {
    proc.assertRunning();
    reads.push(groupRssKiB(proc.pid));
    if (i + 1 < samples) await sleep(intervalMs);
  }
  reads.sort((a, b) => a.kib - b.kib);
  const mid = reads[Math.floor(reads.length / 2)];
  if (!mid || mid.processes === 0) throw new Error(`${proc.name}: no RSS readable for pid ${proc.pid}`);
  return mid;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` until true, the process dies, or `timeoutMs` passes. */
export async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number, proc?: Proc, intervalMs = 50): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    proc?.assertRunning();
    try {
      if (await check()) return;
    } catch (err) { lastError = err; }
    if (performance.now() > deadline) {
      throw new Error(`timed out after ${Math.round(timeoutMs)} ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ''}`);
    }
    await sleep(intervalMs);
  }
}

/** Machine-wide CPU ticks from /proc/stat: busy (not idle or iowait) and total, summed over all CPUs. */
export function cpuTimes(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}

/** Fraction (0-1) of all CPUs that something else kept busy during the next `ms`. */
export async function machineBusy(ms = 1000): Promise<number> {
  try {
    const a = cpuTimes();
    await sleep(ms);
    const b = cpuTimes();
    return b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : 0;
  } catch { return 0; }
}

/** utime + stime of one process (all its threads) in clock ticks, the unit of /proc/stat; undefined once it is gone. */
export function processCpuTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after "(comm)": state(3) ... utime(14) stime(15)
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]);
  } catch { return undefined; }
}

/** VmRSS and VmHWM (peak RSS) in KiB of one process, and its command name; undefined once it is gone. */
export function processMemKiB(pid: number): { rss: number; hwm: number; comm: string } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    const hwm = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
    const comm = /^Name:\s+(.*)$/m.exec(status);
    if (!rss || !hwm) return undefined;
    return { rss: Number(rss[1]), hwm: Number(hwm[1]), comm: comm?.[1]?.trim() ?? '?' };
  } catch { return undefined; }
}

export interface TreeProcess { pid: number; ppid: number; comm: string; rssKiB: number; cpuTicks: number; startTicks: number }

/**
 * `pid` and every live process descended from it (by parent pid, so children that left
 * the process group count too; zombies left out), with VmRSS, CPU ticks (utime + stime) and
 * start time; empty once `pid` is gone. Shared pages of forked children count in each.
 */
export function processTree(pid: number): TreeProcess[] {
  const all = new Map<number, TreeProcess>();
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      // fields after "(comm)": state(3) ppid(4) ... utime(14) stime(15) ... starttime(22)
      const rest = stat.slice(close + 2).split(' ');
      const p: TreeProcess = {
        pid: Number(entry), ppid: Number(rest[1]), comm, rssKiB: 0,
        cpuTicks: Number(rest[11]) + Number(rest[12]), startTicks: Number(rest[19]),
      };
      all.set(p.pid, p);
      const list = children.get(p.ppid) ?? [];
      list.push(p.pid);
      children.set(p.ppid, list);
    } catch { /* exited while we looked */ }
  }
  const out: TreeProcess[] = [];
  const queue = all.has(pid) ? [pid] : [];
  while (queue.length) {
    const p = all.get(queue.shift() ?? -1);
    if (!p) continue;
    queue.push(...(children.get(p.pid) ?? []));
    try {
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${p.pid}/status`, 'utf8'));
      if (!m) continue; // a zombie: exited, not reaped yet
      p.rssKiB = Number(m[1]);
    } catch { continue; }
    out.push(p);
  }
  return out;
}
