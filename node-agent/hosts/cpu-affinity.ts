import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { expandCpuList, parseCpusAllowed } from '../../common/cpu-list.js';
import { EdgeError } from '../../common/errors.js';

// Which CPU each isolate host runs on (docs/isolate-hosts.md, "One host per core").
//
// A host's main thread and its isolates' threads (isolated-vm's pool) hand every request to
// each other several times: in, each host callback, out. Unpinned, the kernel puts the
// woken thread on whichever CPU is idle, so most of those hand-offs cross CPUs and cost an
// inter-processor interrupt. On the 2-core CI machine (a nested VM) a cross-CPU round trip
// between two processes took 77 us and 32 us of CPU, one on the same CPU 15 us and 7 us
// (node ping-pong over a Unix socket). Pinned one host per CPU, the agent served
// hello-world at 20,300 req/s against 11,000-11,300 unpinned, and one actor took 478 calls/s
// against 404 (by hand; docs/agent.md has the bench's figures). The front stays unpinned:
// it relays for every host. So does the cordon host: it should soak up whatever CPU is idle.

export const PIN_HOSTS_MODES = ['auto', 'on', 'off'] as const;
/** `--pin-hosts`: auto pins when there is a host for every CPU the agent may use. */
export type PinHosts = (typeof PIN_HOSTS_MODES)[number];

export class HostAffinityError extends EdgeError {}

/** The CPUs this process may run on (its Cpus_allowed_list: a cgroup cpuset or taskset narrows it); undefined off Linux. */
export function allowedCpus(statusFile = '/proc/self/status'): number[] | undefined {
  let status: string;
  try { status = readFileSync(statusFile, 'utf8'); } catch { return undefined; }
  const list = parseCpusAllowed(status);
  return list === undefined ? undefined : expandCpuList(list);
}

/**
 * The CPU each of `hosts` ordinary isolate hosts is pinned to, by index (host i on the
 * i-th allowed CPU, round robin); undefined: none is pinned.
 *
 * `auto` pins only when there are at least as many hosts as allowed CPUs: then every CPU
 * has a host of its own and pinning leaves none of them idle. With fewer hosts than CPUs
 * (a pod on a node's shared CPUs, a laptop), a pinned host could not move off a CPU other
 * processes keep busy, so the kernel places them as it sees fit.
 */
export function hostCpuPlan(mode: PinHosts, hosts: number, allowed: readonly number[] | undefined): number[] | undefined {
  if (mode === 'off' || allowed === undefined || allowed.length === 0 || hosts <= 0) return undefined;
  if (mode === 'auto' && hosts < allowed.length) return undefined;
  return Array.from({ length: hosts }, (_, i) => allowed[i % allowed.length]!);
}

/** Threads of this process whose allowed CPUs are not exactly `cpu`. */
function unpinnedThreads(cpu: number): number {
  let off = 0;
  for (const tid of readdirSync('/proc/self/task')) {
    let list: string | undefined;
    try { list = parseCpusAllowed(readFileSync(`/proc/self/task/${tid}/status`, 'utf8')); } catch { continue; } // exited meanwhile
    if (list !== String(cpu)) off++;
  }
  return off;
}

/**
 * Pins every thread of this process to `cpu` with taskset(1) (Node has no
 * sched_setaffinity); threads started later inherit it from the thread that starts them,
 * as isolated-vm's pool does. Called before the host makes any isolate. A thread started
 * while taskset walked the list may have missed it: a second pass takes it. Returns how
 * many threads there are; throws HostAffinityError when taskset is missing or refused.
 */
export function pinThisProcess(cpu: number): number {
  let off = 0;
  for (let pass = 0; pass < 2; pass++) {
    try {
      execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(process.pid)], { stdio: 'ignore', timeout: 5_000 });
    } catch (err) {
      throw new HostAffinityError(`could not pin isolate host ${process.pid} to CPU ${cpu} with taskset -a -p: ${err instanceof Error ? err.message : String(err)}`, { cause: err, context: { cpu } });
    }
    off = unpinnedThreads(cpu);
    if (off === 0) return readdirSync('/proc/self/task').length;
  }
  throw new HostAffinityError(`isolate host ${process.pid}: ${off} threads are still not pinned to CPU ${cpu} after taskset -a -p`, { context: { cpu } });
}
