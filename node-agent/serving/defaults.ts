// The serving layer's defaults that `edge agent` prints in its help: here, apart from
// worker-server.ts, so the CLI reads them without importing the isolate runtime (an agent's
// front never loads it: node-agent/front.ts).

/**
 * Each isolate runs one request at a time (so a request's CPU time is exactly the
 * isolate's), so a worker waiting on subrequests needs an isolate per request in flight.
 * Idle ones beyond minWarmIsolates are disposed after idleIsolateMs.
 */
export const DEFAULT_MAX_ISOLATES_PER_WORKER = 16;
/** Idle isolates above minWarmIsolates (every one outside the worker's shard) live this long (`edge agent --idle-isolate-ms`). */
export const DEFAULT_IDLE_ISOLATE_MS = 60_000;
