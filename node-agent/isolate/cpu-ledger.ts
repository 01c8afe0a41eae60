/**
 * Which share of this process's CPU a request's isolate had: what the CPU limit is checked
 * against.
 *
 * isolated-vm's `cpuTime` counts a finished slice by its thread's CPU clock, but the slice
 * still running by wall time since it began (executor.cc, CpuTimer::Delta). A handler the
 * kernel has descheduled is charged the time it waited. Checking the process's CPU since the
 * request began is not enough either: with four tenants' isolates sharing one core, each
 * waits three quarters of the time while the process spends a full core. Four handlers of
 * 20 ms of CPU each were killed for 50 ms that way (test/security/cpu-contention.test.ts).
 *
 * So a request is charged the process's CPU in proportion to its isolate's part of the time
 * every isolate and the main thread were seen running. Each is overcounted the same way
 * while descheduled, so the proportion holds. A spinner alone in the process is charged
 * all of it and stopped on time. Two spinners on one core are each charged half, which is
 * what they had, so each is stopped once it has had its limit.
 */

/** One isolate's reading of `cpuTime` at the ledger's last look. */
export interface CpuSeen { cpuNs: bigint }

export class CpuLedger {
  private total = 0n;
  private mainSeenMs: number;

  /** `mainActiveMs`: the main thread's busy time, cumulative (its event loop's utilization). */
  constructor(private readonly mainActiveMs: () => number) {
    this.mainSeenMs = mainActiveMs();
  }

  /**
   * The time every isolate and the main thread were seen running, cumulative, in ns. It can
   * fall: a slice's wall-time reading is replaced by its CPU time when it ends. Only
   * differences between two readings mean anything.
   */
  get totalNs(): bigint { return this.total; }

  /** Adds an isolate's time since its last look and remembers its reading. */
  observe(seen: CpuSeen, cpuNs: bigint): void {
    this.total += cpuNs - seen.cpuNs;
    seen.cpuNs = cpuNs;
  }

  /** Adds the main thread's busy time since the last look. */
  observeMain(): void {
    const now = this.mainActiveMs();
    this.total += BigInt(Math.round((now - this.mainSeenMs) * 1e6));
    this.mainSeenMs = now;
  }
}

/**
 * The process's CPU over an interval charged to one isolate: `processNs` times its part
 * (`ownNs`) of the time everything was seen running (`allNs`). Never more than the process
 * spent, and all of it when the readings say nothing (an interval with no look in it).
 */
export function chargedNs(processNs: bigint, ownNs: bigint, allNs: bigint): bigint {
  if (allNs <= 0n || ownNs >= allNs) return processNs;
  if (ownNs <= 0n) return 0n;
  return (processNs * ownNs) / allNs;
}
