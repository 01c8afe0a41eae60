import type { Presence } from '../../common/nats.js';

// Shard and conquer (docs/shards.md): per region, each worker is kept warm on a few hosts
// (its shard), picked on the region's consistent-hash ring (common/agent-ring.ts, the ring
// actors use: the live, not draining processes that serve the worker's namespace) by the
// worker's ref. Every host computes the same shard from the same view, without talking; a
// host that is not a member forwards the request to one that is (http-front.ts).
//
// The shard's size follows the worker's load, level-triggered: each host measures the
// requests it runs for each worker (in flight, smoothed: LoadMeter) and publishes the busy
// ones in its presence (`shardLoad`); every host sums the region's figures for a worker and
// sizes its shard so each member carries about `targetConcurrency`. The sum does not depend
// on the size (a bigger shard splits the same load), presence is in NATS, so a restarted
// host computes the same size from what it reads. Growing is at once; shrinking is one
// member at a time, and only once the load would fit in one member fewer at half the target,
// so a shard does not flap at the boundary. A bigger shard keeps the smaller one's members
// (the ring's range only appends), so growing warms new members and moves nothing.

/** A worker's shard bounds (spec.placement.shard); min 0 turns sharding off: every host serves it. */
export interface ShardPolicy { min: number; max: number }

export const DEFAULT_SHARD_POLICY: ShardPolicy = { min: 2, max: 8 };
/** In-flight requests per member the size aims at. */
export const DEFAULT_TARGET_CONCURRENCY = 4;
/** Loads below this are not published (most workers are idle most of the time). */
export const PUBLISHED_LOAD_FLOOR = 0.1;

/** What the shard asks of the ring (common/agent-ring.ts's AgentRing). */
export interface ShardRing {
  /**
   * The first `n` distinct live processes on the ring from `key` (fewer when the region has
   * fewer); with `self`, on the ring as it will be once that process's presence is in it.
   */
  members(region: string, key: string, n: number, self?: Presence): Presence[];
  /** How many live processes of the region may serve `key`'s namespace (`self` counted). */
  size(region: string, key: string, self?: Presence): number;
  onChange(cb: () => void): void;
}

/**
 * The size a worker's shard should have. `hosts` is how many may serve it, `load` the
 * region's summed in-flight requests for it, `current` the size used so far (undefined:
 * none yet, as after a restart). Sharding off (min 0): every host.
 */
export function shardSize(policy: ShardPolicy, hosts: number, load: number, current: number | undefined, target = DEFAULT_TARGET_CONCURRENCY): number {
  if (hosts <= 0) return 0;
  if (policy.min <= 0) return hosts;
  const lo = Math.min(policy.min, hosts);
  const hi = Math.max(lo, Math.min(policy.max, hosts));
  const clamp = (n: number) => Math.min(hi, Math.max(lo, n));
  const want = clamp(Math.ceil(load / target));
  if (current === undefined || want >= current) return want;
  const cur = clamp(current);
  // One member fewer, and only when that many would each carry at most half the target.
  return load <= (cur - 1) * target * 0.5 ? clamp(cur - 1) : cur;
}

/**
 * In-flight requests per worker on this host, smoothed: sample() (every SAMPLE_MS) folds the
 * count now into an exponential average, published (published()) for the region to size
 * shards with. A request counts where it runs, so forwarded ones count once, at the member.
 */
export class LoadMeter {
  private readonly inflight = new Map<string, number>();
  private readonly avg = new Map<string, number>();

  begin(worker: string): void { this.inflight.set(worker, (this.inflight.get(worker) ?? 0) + 1); }

  // A worker's count stays at 0 between requests, dropped by sample() once its average has
  // decayed: deleting it from the Map at every request's end made V8 rebuild the Map's table
  // in old space each time (docs/agent.md, "Old-space garbage per request").
  end(worker: string): void {
    const n = this.inflight.get(worker);
    if (n !== undefined && n > 0) this.inflight.set(worker, n - 1);
  }

  /** Folds the in-flight counts into the averages (weight `alpha` for now). */
  sample(alpha = 0.2): void {
    for (const [w, a] of this.avg) {
      const now = this.inflight.get(w) ?? 0;
      const next = a * (1 - alpha) + now * alpha;
      if (next < PUBLISHED_LOAD_FLOOR / 2 && now === 0) { this.avg.delete(w); this.inflight.delete(w); }
      else this.avg.set(w, next);
    }
    for (const [w, n] of this.inflight) if (!this.avg.has(w)) this.avg.set(w, n * alpha);
  }

  /** The busy workers' smoothed loads, rounded (so the presence changes only when they do). */
  published(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [w, a] of this.avg) if (a >= PUBLISHED_LOAD_FLOOR) out[w] = Math.round(a * 10) / 10;
    return out;
  }
}

/** The region's summed published load per worker ref, from the live processes' presence. */
export function regionLoads(agents: readonly Presence[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const p of agents) for (const [w, n] of Object.entries(p.shardLoad ?? {})) out.set(w, (out.get(w) ?? 0) + n);
  return out;
}

export interface ShardsOptions {
  ring: ShardRing;
  region: string;
  /** This process's presence name: whether it is a member. */
  self: string;
  /** The region's summed published load per worker ref (read every tick). */
  loads(): ReadonlyMap<string, number>;
  targetConcurrency?: number;
  /** Sharding off for every worker (`edge agent --shards off`): every host serves every worker. */
  disabled?: boolean;
  /**
   * Whether this host's own presence is not in the view yet (it is starting): its shards are
   * then computed on the ring with it, as they will be, so a starting host warms only its
   * share rather than every worker. False once seen (a draining host is seen, and left out).
   */
  pendingSelf?(): boolean;
}

export type ShardRoute =
  /** This host serves it: it is a member, or the worker is not sharded, or there is nobody else. */
  | { local: true }
  /** A member to forward to, in the order to try them. */
  | { local: false; members: Presence[] };

interface Entry { size: number; members: Presence[]; member: boolean }

/** Every worker's shard on this host: route() on the request path, isMember() for what to keep warm. */
export class Shards {
  private readonly entries = new Map<string, Entry>();
  private loads: ReadonlyMap<string, number> = new Map();
  private readonly listeners = new Set<() => void>();
  private next = 0;

  private readonly selfStub: Presence;

  constructor(private readonly opts: ShardsOptions) {
    opts.ring.onChange(() => this.refresh(true));
    this.selfStub = { agent: opts.self, node: opts.self, region: opts.region, address: 'http://self.invalid/', ttlMs: 1000, startedAt: '', draining: false };
  }

  /** This host, while it is to be counted on the ring before its presence is. */
  private get self(): Presence | undefined { return this.opts.pendingSelf?.() ? this.selfStub : undefined; }

  get enabled(): boolean { return !this.opts.disabled; }

  /** Told when any worker's membership of this host may have changed. */
  onChange(cb: () => void): void { this.listeners.add(cb); }

  /** Re-reads the loads and recomputes every known shard (sizes, and members when the ring changed). */
  refresh(ringChanged = false): void {
    this.loads = this.opts.loads();
    let changed = ringChanged;
    for (const [key, e] of this.entries) {
      const policy = this.policies.get(key);
      if (!policy) { this.entries.delete(key); continue; }
      const hosts = this.opts.ring.size(this.opts.region, key, this.self);
      const size = shardSize(policy, hosts, this.loads.get(key) ?? 0, e.size, this.opts.targetConcurrency);
      if (size === e.size && !ringChanged) continue;
      const next = this.compute(key, size);
      if (next.member !== e.member) changed = true;
      this.entries.set(key, next);
    }
    if (ringChanged) this.next = 0;
    if (changed) for (const l of this.listeners) l();
  }

  private readonly policies = new Map<string, ShardPolicy>();

  /** The shard policy of a worker this host serves (undefined: it is gone). */
  setPolicy(key: string, policy: ShardPolicy | undefined): void {
    if (!policy) { this.policies.delete(key); this.entries.delete(key); return; }
    const old = this.policies.get(key);
    this.policies.set(key, policy);
    if (old && (old.min !== policy.min || old.max !== policy.max)) this.entries.delete(key);
  }

  private compute(key: string, size: number): Entry {
    const members = this.opts.ring.members(this.opts.region, key, size, this.self);
    return { size, members, member: members.some((p) => p.agent === this.opts.self) };
  }

  private entry(key: string): Entry | undefined {
    let e = this.entries.get(key);
    if (e) return e;
    const policy = this.policies.get(key);
    if (!policy) return undefined;
    const hosts = this.opts.ring.size(this.opts.region, key, this.self);
    e = this.compute(key, shardSize(policy, hosts, this.loads.get(key) ?? 0, undefined, this.opts.targetConcurrency));
    this.entries.set(key, e);
    return e;
  }

  /**
   * Whether this host should keep `key` warm: a member, or sharding is off for it, or the
   * region has no ring yet (no presence: serve as before).
   */
  isMember(key: string): boolean {
    if (this.opts.disabled) return true;
    const e = this.entry(key);
    return !e || e.members.length === 0 || e.member;
  }

  /** Where a request for `key` arriving from a client goes. */
  route(key: string): ShardRoute {
    if (this.opts.disabled) return { local: true };
    const e = this.entry(key);
    if (!e || e.member || e.members.length === 0) return { local: true };
    // Round robin over the members (a host not in the ring yet is never forwarded to).
    const i = this.next++ % e.members.length;
    return { local: false, members: i === 0 ? e.members : [...e.members.slice(i), ...e.members.slice(0, i)] };
  }

  /** Each known worker's shard: its size and members (presence names), for metrics and the report. */
  snapshot(): Map<string, { size: number; members: string[]; member: boolean }> {
    return new Map([...this.entries].map(([k, e]) => [k, { size: e.size, members: e.members.map((p) => p.agent), member: e.member }]));
  }
}
