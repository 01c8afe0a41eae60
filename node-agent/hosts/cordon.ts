// Which namespaces the agent moves to its cordon host (docs/isolate-hosts.md, "The cordon"):
// tenants that take more than their share of the node's CPU, or that keep hitting their CPU
// or memory limit, run in one host process at the lowest CPU priority (nice 19), so the
// kernel gives the node's CPU to everyone else first and to them what is left. Nice only
// weighs: a cordoned tenant alone on an idle node still gets the whole CPU.
//
// Pure logic, driven by the hosts' usage reports and a clock, so it is unit-tested without
// processes. Level-triggered in the controller-runtime sense: `evaluate(now)` computes the
// set from what was reported, and a front that restarts starts from an empty set (its
// tenants are measured again within a second).


import type { NamespaceUsage } from '../serving/worker-server.js';

export interface CordonOptions {
  /** CPUs of the node: the capacity tenants share. */
  cores: number;
  /**
   * A namespace is cordoned when its CPU rate exceeds this many times its fair share
   * (cores / namespaces using CPU) and `minCpuShare` of one core. Default 1: more than its share.
   */
  fairShareFactor?: number;
  /** Below this CPU rate (cores) a namespace is never cordoned for its rate (default 0.25). */
  minCpuShare?: number;
  /** The window the CPU rate is averaged over (ms, default 1000: hosts report every 200 ms). */
  windowMs?: number;
  /**
   * How long a rate must stay over the share before it counts (ms, default 1500): a light
   * tenant whose requests were held up by someone else's spin arrives in a burst, and must
   * not be taken for the spinner. A rate over twice the share counts at once.
   */
  sustainMs?: number;
  /**
   * CPU charged per request on top of the isolate's own (ms, default 0.5): the front's and the
   * host's HTTP and dispatch work, which a flood of cheap requests costs the node without
   * showing in isolate CPU time (about 0.5-1 ms per request measured in bench/soak.ts).
   */
  requestCostMs?: number;
  /** How long a cordon holds after the last offence (ms, default 60 s); doubles per repeat, up to maxHoldMs (default 10 min). */
  holdMs?: number;
  maxHoldMs?: number;
}

export type CordonReason = 'cpu-share' | 'limit-hit';

interface Tenant {
  /** CPU ms reported within the last windowMs, oldest first, and their sum. */
  samples: { at: number; cpuMs: number }[];
  cpu: number;
  /** When the namespace last offended (a limit kill, or a rate over its share). */
  lastOffence: number;
  /** Limit hits reported since the last evaluate(). */
  kills: number;
  /** Over its share continuously since (undefined: not over now). */
  overSince: number | undefined;
  /**
   * Released until then on probation: over its share counts at once. Its rate was measured
   * while the kernel starved it, so it may look like a light tenant only until it is home.
   */
  probationUntil: number;
  /** Cordoned since (undefined: not cordoned). */
  since: number | undefined;
  reason: CordonReason | undefined;
  /** Times cordoned (the hold doubles each time). */
  repeats: number;
}

export interface CordonChange { namespace: string; cordoned: boolean; reason?: CordonReason; cpuCores?: number }

export class CordonPolicy {
  private readonly tenants = new Map<string, Tenant>();
  private readonly factor: number;
  private readonly minShare: number;
  private readonly windowMs: number;
  private readonly sustainMs: number;
  private readonly holdMs: number;
  private readonly maxHoldMs: number;
  private readonly requestCostMs: number;

  constructor(private readonly opts: CordonOptions) {
    this.factor = opts.fairShareFactor ?? 1;
    this.minShare = opts.minCpuShare ?? 0.25;
    this.windowMs = opts.windowMs ?? 1000;
    this.sustainMs = opts.sustainMs ?? 1500;
    this.holdMs = opts.holdMs ?? 60_000;
    this.maxHoldMs = opts.maxHoldMs ?? 600_000;
    this.requestCostMs = opts.requestCostMs ?? 0.5;
  }

  /** A host's report: usage per namespace since its last one. */
  report(now: number, usage: Readonly<Record<string, NamespaceUsage>>): void {
    for (const [ns, u] of Object.entries(usage)) {
      const t = this.tenant(ns);
      const cpuMs = u.cpuMs + u.requests * this.requestCostMs;
      if (cpuMs > 0) { t.samples.push({ at: now, cpuMs }); t.cpu += cpuMs; }
      t.kills += u.limitHits;
    }
  }

  /**
   * Cordons namespaces that were killed for a limit since the last call or whose CPU rate is
   * over their share, releases those whose hold has passed; returns what changed.
   */
  evaluate(now: number): CordonChange[] {
    const changes: CordonChange[] = [];
    const rates = new Map<string, number>();
    for (const [ns, t] of this.tenants) {
      this.decay(t, now);
      rates.set(ns, this.rate(t));
    }
    const using = [...rates.values()].filter((r) => r >= 0.01).length;
    // What is shared is the node, or what the tenants are charged when that is more: the
    // request cost is an estimate, and tenants sharing evenly must not all be over it.
    let total = 0;
    for (const r of rates.values()) total += r;
    const share = Math.max(this.minShare, (this.factor * Math.max(this.opts.cores, total)) / Math.max(1, using));
    // Alone, a tenant takes CPU from nobody: cordoning it only costs it (its requests' host
    // work, charged at requestCostMs, put a lone busy tenant over a whole node's share).
    const alone = using <= 1;
    for (const [ns, t] of this.tenants) {
      const rate = rates.get(ns)!;
      if (rate > share && !alone) t.overSince ??= now; else t.overSince = undefined;
      // Twice the share is no burst of held-up requests: no need to wait.
      const sustained = t.overSince !== undefined && (now - t.overSince >= this.sustainMs || rate > 2 * share || now < t.probationUntil);
      const offence: CordonReason | undefined = t.kills > 0 ? 'limit-hit' : sustained ? 'cpu-share' : undefined;
      t.kills = 0;
      if (offence) {
        t.lastOffence = now;
        if (t.since === undefined) {
          t.since = now;
          t.reason = offence;
          t.repeats++;
          changes.push({ namespace: ns, cordoned: true, reason: offence, cpuCores: round(rate) });
        }
        continue;
      }
      if (t.since !== undefined && now - t.lastOffence >= this.hold(t)) {
        t.probationUntil = now + this.hold(t);
        t.since = undefined;
        t.reason = undefined;
        changes.push({ namespace: ns, cordoned: false, cpuCores: round(rate) });
      }
      // A quiet namespace that is not cordoned is forgotten (repeats decay with it).
      if (t.since === undefined && rate < 0.001 && now - t.lastOffence > this.maxHoldMs) this.tenants.delete(ns);
    }
    return changes;
  }

  /** The cordoned namespaces now. */
  cordoned(): string[] {
    return [...this.tenants].filter(([, t]) => t.since !== undefined).map(([ns]) => ns).sort();
  }

  isCordoned(namespace: string): boolean { return this.tenants.get(namespace)?.since !== undefined; }

  /** CPU rate (cores) of each namespace, for /status. */
  rates(now: number): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [ns, t] of this.tenants) { this.decay(t, now); out[ns] = round(this.rate(t)); }
    return out;
  }

  private tenant(ns: string): Tenant {
    let t = this.tenants.get(ns);
    if (!t) {
      t = { samples: [], cpu: 0, lastOffence: -Infinity, kills: 0, overSince: undefined, probationUntil: -Infinity, since: undefined, reason: undefined, repeats: 0 };
      this.tenants.set(ns, t);
    }
    return t;
  }

  private hold(t: Tenant): number {
    return Math.min(this.maxHoldMs, this.holdMs * 2 ** Math.max(0, t.repeats - 1));
  }

  /** Drops the samples older than the window. */
  private decay(t: Tenant, now: number): void {
    while (t.samples.length > 0 && t.samples[0]!.at <= now - this.windowMs) t.cpu -= t.samples.shift()!.cpuMs;
    if (t.samples.length === 0) t.cpu = 0;
  }

  /** Cores: CPU ms in the window over the window's ms. */
  private rate(t: Tenant): number { return t.cpu / this.windowMs; }
}

const round = (n: number): number => Math.round(n * 100) / 100;
