// Benchmark settings, from the environment. Every count and every wait is bounded here.

export type Phase = 'warm' | 'cold' | 'memory' | 'hosts' | 'dynamic' | 'op-create' | 'op-scale' | 'actors' | 'hibernation' | 'shards' | 'percore';
export const ALL_PHASES: readonly Phase[] = ['warm', 'cold', 'memory', 'hosts', 'dynamic', 'op-create', 'op-scale', 'actors', 'hibernation'];
/**
 * Phases only BENCH_ONLY runs: shards takes 8-10 minutes and about 4 GiB on 2 cores;
 * percore about 4 minutes (twelve loads), which would take the full run past 10 minutes,
 * and its pinned figures are a separate question from the warm rows' whole-box ones.
 */
const OPT_IN_PHASES: readonly Phase[] = ['shards', 'percore'];
/** The phases that run workerd (the operator phases have no peer). */
export const PEER_PHASES: readonly Phase[] = ['warm', 'cold', 'memory', 'dynamic', 'actors', 'hibernation', 'percore'];
/** BENCH_ONLY shorthands. */
const PHASE_ALIASES: Record<string, Phase[]> = { operator: ['op-create', 'op-scale'], agent: ['warm', 'cold', 'memory', 'hosts', 'dynamic'] };
export type PeerName = 'agent' | 'workerd';
export type LoadgenChoice = 'auto' | 'wrk' | 'autocannon';

export interface BenchConfig {
  quick: boolean;
  /** Measured seconds of each warm load run (the same for both peers). */
  durationS: number;
  /** Unmeasured load before each measured run (JIT, connection setup). */
  warmupS: number;
  connections: number;
  /** wrk threads (the load generator shares the machine's cores with the peer). */
  threads: number;
  loadgen: LoadgenChoice;
  /** Distinct never-seen workers the agent answers a first request for. */
  coldAgentWorkers: number;
  /** Fresh workerd processes spawned, one worker each (workerd has no on-demand loading). */
  coldWorkerdSpawns: number;
  /** Pause before each agent first request, so a refilled pre-warmed pool is what is measured. */
  coldGapMs: number;
  /** Idle loaded workers for the memory row. */
  memoryWorkers: number;
  /** placement.minWarmIsolates of the agent's warm-throughput workers. */
  agentWarmIsolates: number;
  /** The N of the `isolate hosts 0 vs N` rows (the agent's own default is 2). */
  isolateHosts: number;
  /** Wait after a peer reports ready before RSS is read. */
  settleMs: number;
  /** Memory: the idle agent's (and workerd's) base is read again this long after ready (0: not). */
  memoryIdleS: number;
  /** Upper bound on a peer getting ready (1,000 workers take a while). */
  readyTimeoutMs: number;
  /** Operator, create to first response: EdgeWorkers created one after another. */
  opCreateWorkers: number;
  /** Operator, create to first response: pause between polls of the agent. */
  opPollMs: number;
  /** Operator at scale: EdgeWorkers created in one go, then deleted. */
  opScaleWorkers: number;
  /** Operator at scale: POSTs (and DELETEs) in flight at once. */
  opConcurrency: number;
  /** Operator phases: longest wait for any one step (all Ready, all deleted, one first response). */
  opTimeoutMs: number;
  /** Actors: measured sequential calls per path (same agent, forwarded, workerd). */
  actorCalls: number;
  /** Actors: unmeasured calls just before each measured series. */
  actorWarmupCalls: number;
  /**
   * Actors: unmeasured calls between the first series and a second, steady one (same agent
   * and workerd; 0: no steady series). The first series after a short warm-up mostly
   * measures V8 tiering the isolates' code up: TurboFan compiles on the host's own CPU for
   * several thousand calls.
   */
  actorSteadyAfterCalls: number;
  /** Actors: agents (processes) in the one region. */
  actorAgents: number;
  /** Actors: actors activated before the busiest agent is killed (and, in a second round, drained). */
  actorRecoveryActors: number;
  /** Actors: pause between polls of one actor while waiting for it to answer again. */
  actorPollMs: number;
  /** Actors: longest wait for all actors of the killed agent to answer again. */
  actorRecoveryTimeoutMs: number;
  /** Shards (issue 17): agents (processes) in the one region. */
  shardAgents: number;
  /** Shards: workers published to the region. */
  shardWorkers: number;
  /** Shards: requests a second offered (open loop), Zipf over the workers, uniform over the agents. */
  shardRate: number;
  /** Shards: unmeasured load before each mode's measured window (isolates loaded, shards sized). */
  shardWarmupS: number;
  /** Shards: measured seconds per mode. */
  shardDurationS: number;
  /** Shards: the agents' --idle-isolate-ms (the same in both modes). */
  shardIdleMs: number;
  /** Shards: every worker's minWarmIsolates (the same in both modes). */
  shardMinWarm: number;
  /** Shards: the agents' --isolate-hosts. */
  shardIsolateHosts: number;
  /** Shards: measured calls of each kind for the forward overhead. */
  shardOverheadCalls: number;
  /** Per core (issue 19): the taskset CPU list of the server under test. */
  percoreServerCpus: string;
  /** Per core: the taskset CPU list of the load generator (another core than the server's). */
  percoreLoadCpus: string;
  /** Per core: connections of the throughput loads (req/s, p50, CPU). */
  percoreConnections: number;
  /** Per core: connections of the p99 loads (issue 19's floor: p99 under 10 ms at 50). */
  percoreP99Connections: number;
  /** Per core: the pinned agent's --isolate-hosts (undefined: the agent's default, as shipped). */
  percoreAgentHosts: number | undefined;
  /** Per core: more `edge agent` flags for every agent of the phase (e.g. --no-cordon). */
  percoreAgentArgs: string[];
  /** Per core: the agent's --isolate-hosts of the unpinned scaling runs (empty: none). */
  percoreScaleHosts: number[];
  phases: Set<Phase>;
  peers: Set<PeerName>;
}

function num(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < min || v > max) {
    throw new Error(`${name}=${raw}: expected a number from ${min} to ${max}`);
  }
  return v;
}

function cpuList(name: string, fallback: string): string {
  const raw = process.env[name]?.trim() || fallback;
  if (!/^\d+([-,]\d+)*$/.test(raw)) throw new Error(`${name}=${raw}: expected a taskset CPU list such as 0, 1 or 0-1`);
  return raw;
}

/** A comma list of whole numbers; "none" or "0" alone: the empty list. */
function numList(name: string, fallback: number[], min: number, max: number): number[] {
  const raw = process.env[name]?.trim();
  if (raw === undefined || raw === '') return fallback;
  if (raw === 'none' || raw === '0') return [];
  return raw.split(',').map((s) => {
    const v = Number(s.trim());
    if (!Number.isInteger(v) || v < min || v > max) throw new Error(`${name}=${raw}: expected whole numbers from ${min} to ${max}, comma-separated (or none)`);
    return v;
  });
}

function list<T extends string>(name: string, all: readonly T[], aliases: Record<string, T[]> = {}, optIn: readonly T[] = []): Set<T> {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return new Set(all);
  const picked = raw.split(',').map((s) => s.trim()).filter(Boolean).flatMap((p) => aliases[p] ?? [p]);
  for (const p of picked) {
    if (!(all as readonly string[]).includes(p) && !(optIn as readonly string[]).includes(p)) {
      throw new Error(`${name}: unknown value "${p}" (expected some of ${[...all, ...optIn, ...Object.keys(aliases)].join(',')})`);
    }
  }
  return new Set(picked as T[]);
}

export function loadConfig(): BenchConfig {
  const quick = process.env.BENCH_QUICK === '1' || process.env.BENCH_QUICK === 'true';
  const loadgen = (process.env.BENCH_LOADGEN ?? 'auto') as LoadgenChoice;
  if (!['auto', 'wrk', 'autocannon'].includes(loadgen)) throw new Error(`BENCH_LOADGEN=${loadgen}: expected auto, wrk or autocannon`);
  return {
    quick,
    durationS: num('BENCH_DURATION_S', quick ? 3 : 10, 1, 300),
    warmupS: num('BENCH_WARMUP_S', quick ? 1 : 3, 0, 60),
    connections: num('BENCH_CONNECTIONS', 50, 1, 1000),
    threads: num('BENCH_THREADS', 2, 1, 64),
    loadgen,
    coldAgentWorkers: num('BENCH_COLD_WORKERS', quick ? 20 : 100, 1, 1000),
    coldWorkerdSpawns: num('BENCH_COLD_WORKERD_SPAWNS', quick ? 5 : 20, 1, 200),
    coldGapMs: num('BENCH_COLD_GAP_MS', 50, 0, 5000),
    memoryWorkers: num('BENCH_MEMORY_WORKERS', quick ? 200 : 1000, 2, 5000),
    agentWarmIsolates: num('BENCH_AGENT_WARM_ISOLATES', 1, 1, 64),
    isolateHosts: num('BENCH_ISOLATE_HOSTS', 2, 1, 16),
    settleMs: num('BENCH_SETTLE_MS', quick ? 1000 : 2000, 0, 60000),
    memoryIdleS: num('BENCH_MEMORY_IDLE_S', quick ? 0 : 40, 0, 600),
    readyTimeoutMs: num('BENCH_READY_TIMEOUT_S', 240, 5, 1800) * 1000,
    opCreateWorkers: num('BENCH_OP_CREATE_WORKERS', 20, 1, 500),
    opPollMs: num('BENCH_OP_POLL_MS', 5, 1, 1000),
    opScaleWorkers: num('BENCH_OP_WORKERS', quick ? 200 : 1000, 1, 10_000),
    opConcurrency: num('BENCH_OP_CONCURRENCY', 16, 1, 256),
    opTimeoutMs: num('BENCH_OP_TIMEOUT_S', 300, 5, 3600) * 1000,
    actorCalls: num('BENCH_ACTOR_CALLS', quick ? 300 : 2000, 10, 100_000),
    actorWarmupCalls: num('BENCH_ACTOR_WARMUP_CALLS', quick ? 50 : 200, 0, 100_000),
    actorSteadyAfterCalls: num('BENCH_ACTOR_STEADY_AFTER_CALLS', quick ? 0 : 8000, 0, 1_000_000),
    actorAgents: num('BENCH_ACTOR_AGENTS', 3, 2, 8),
    actorRecoveryActors: num('BENCH_ACTOR_RECOVERY_ACTORS', quick ? 30 : 50, 3, 1000),
    actorPollMs: num('BENCH_ACTOR_POLL_MS', 10, 1, 1000),
    actorRecoveryTimeoutMs: num('BENCH_ACTOR_TIMEOUT_S', 30, 5, 600) * 1000,
    shardAgents: num('BENCH_SHARDS_AGENTS', 6, 3, 16),
    shardWorkers: num('BENCH_SHARDS_WORKERS', quick ? 1000 : 10_000, 10, 100_000),
    shardRate: num('BENCH_SHARDS_RATE', 50, 1, 100_000),
    shardWarmupS: num('BENCH_SHARDS_WARMUP_S', quick ? 10 : 30, 0, 3600),
    shardDurationS: num('BENCH_SHARDS_DURATION_S', quick ? 20 : 60, 5, 3600),
    shardIdleMs: num('BENCH_SHARDS_IDLE_MS', 30_000, 1000, 3_600_000),
    shardMinWarm: num('BENCH_SHARDS_MIN_WARM', 0, 0, 64),
    shardIsolateHosts: num('BENCH_SHARDS_ISOLATE_HOSTS', 0, 0, 8),
    shardOverheadCalls: num('BENCH_SHARDS_OVERHEAD_CALLS', quick ? 100 : 500, 10, 100_000),
    percoreServerCpus: cpuList('BENCH_PERCORE_SERVER_CPUS', '1'),
    percoreLoadCpus: cpuList('BENCH_PERCORE_LOAD_CPUS', '0'),
    percoreConnections: num('BENCH_PERCORE_CONNECTIONS', 32, 1, 1000),
    percoreP99Connections: num('BENCH_PERCORE_P99_CONNECTIONS', 50, 1, 1000),
    percoreAgentHosts: process.env.BENCH_PERCORE_AGENT_HOSTS ? num('BENCH_PERCORE_AGENT_HOSTS', 0, 0, 16) : undefined,
    percoreAgentArgs: (process.env.BENCH_PERCORE_AGENT_ARGS ?? '').split(/\s+/).filter(Boolean),
    percoreScaleHosts: numList('BENCH_PERCORE_SCALE_HOSTS', [1, 2], 1, 16),
    phases: list<Phase>('BENCH_ONLY', ALL_PHASES, PHASE_ALIASES, OPT_IN_PHASES),
    peers: list<PeerName>('BENCH_PEERS', ['agent', 'workerd']),
  };
}
