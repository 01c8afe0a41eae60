// The list-append checker (pure: a history in, counts and examples out), after Jepsen's
// list-append workload (jepsen.tests.cycle.append). Every append writes a value no other
// operation writes, so a value names the one append that made it, and every list a read
// (or an append, which returns the list it produced) saw is a prefix of the key's one true
// history when the system is linearizable. What is checked, per key:
//
// - lost: an acknowledged append missing from the key's final read (made after every
//   fault healed), or from a later read that started after the ack.
// - duplicated: a value twice in one list.
// - forked: two observed lists of which neither is a prefix of the other.
// - stale: a read invoked after an append was acknowledged that does not contain it (and
//   the value is not lost: it turns up later, so the reader saw an old state).
// - reordered: in the final list, a value placed after one whose append was invoked only
//   after it was acknowledged (real-time order broken).
// - phantom: a value no append wrote; failedApplied: a value from an append the client
//   recorded as certainly not done (a "fail" outcome that was a lie).
//
// An "unknown" outcome (timeout, reset, 5xx after sending) may or may not have happened:
// it is never lost, but it may appear anywhere from its invocation on.

export type Outcome = 'ok' | 'fail' | 'unknown';

export interface Op {
  /** The client (logical process) that ran it. */
  process: number;
  type: 'append' | 'read';
  key: string;
  /** The value an append wrote (unique in the history). */
  value?: string;
  /** ms (any monotonic clock shared by the whole history). */
  invokeMs: number;
  completeMs: number;
  outcome: Outcome;
  /** The list it returned, for an ok read or an ok append. */
  list?: string[];
  /** A read made after the faults healed, to settle what the key holds. */
  final?: boolean;
  /** Where it was sent (for the examples). */
  via?: string;
  /** Why it failed or is unknown. */
  error?: string;
}

export interface Anomaly {
  kind: 'lost' | 'duplicated' | 'forked' | 'stale' | 'reordered' | 'phantom' | 'failedApplied';
  key: string;
  detail: string;
}

export interface CheckResult {
  ops: number;
  ok: number;
  failed: number;
  unknown: number;
  /** Acknowledged appends. */
  acked: number;
  /** Acknowledged appends missing from the final read or from a read after a later one had them. */
  lost: number;
  /** Lists that hold a value twice. */
  duplicated: number;
  /** Distinct observed lists that are neither a prefix nor an extension of the key's settled list. */
  forked: number;
  /** Reads (or append results) missing a value acknowledged before they were invoked, that the key still holds. */
  stale: number;
  /** Most acknowledged values one stale read missed. */
  staleMaxMissing: number;
  reordered: number;
  phantom: number;
  failedApplied: number;
  /** Keys with no ok final read (their lost count is then what later reads show). */
  keysWithoutFinal: string[];
  /** The first few anomalies of each kind, for the report. */
  examples: Anomaly[];
}

const EXAMPLES_PER_KIND = 5;

function isPrefix(a: readonly string[], b: readonly string[]): boolean {
  if (a.length > b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const short = (l: readonly string[]) => (l.length <= 8 ? JSON.stringify(l) : `[${l.slice(0, 3).join(',')} ... ${l.slice(-3).join(',')}] (${l.length})`);

export function checkListAppend(history: readonly Op[]): CheckResult {
  const examples: Anomaly[] = [];
  const counts = { lost: 0, duplicated: 0, forked: 0, stale: 0, reordered: 0, phantom: 0, failedApplied: 0 };
  let staleMaxMissing = 0;
  const note = (a: Anomaly) => {
    counts[a.kind]++;
    if (examples.filter((e) => e.kind === a.kind).length < EXAMPLES_PER_KIND) examples.push(a);
  };
  const keysWithoutFinal: string[] = [];

  const byKey = new Map<string, Op[]>();
  for (const op of history) {
    let l = byKey.get(op.key);
    if (!l) byKey.set(op.key, (l = []));
    l.push(op);
  }

  for (const [key, ops] of byKey) {
    const appends = new Map<string, Op>();
    for (const op of ops) if (op.type === 'append' && op.value !== undefined) appends.set(op.value, op);
    // Every list someone saw, with the op that saw it; an append sees the state it made.
    const seen = ops.filter((o) => o.outcome === 'ok' && o.list);

    // duplicated, phantom, failedApplied: per observed list / per value.
    const everSeen = new Set<string>();
    for (const o of seen) {
      const set = new Set<string>();
      for (const v of o.list!) {
        if (set.has(v)) note({ kind: 'duplicated', key, detail: `${v} twice in ${short(o.list!)} (${o.type} via ${o.via ?? '?'})` });
        set.add(v);
        everSeen.add(v);
      }
    }
    for (const v of everSeen) {
      const a = appends.get(v);
      if (!a) note({ kind: 'phantom', key, detail: `${v} was never appended` });
      else if (a.outcome === 'fail') note({ kind: 'failedApplied', key, detail: `${v} is there, but its append (via ${a.via ?? '?'}, ${Math.round(a.invokeMs)}-${Math.round(a.completeMs)} ms) failed: ${a.error ?? 'no reason'}` });
    }

    // lost: against the final read (the longest ok final list), else the longest list seen.
    const finals = seen.filter((o) => o.final);
    if (finals.length === 0) keysWithoutFinal.push(key);
    const settled = (finals.length ? finals : seen).reduce<readonly string[]>((best, o) => (o.list!.length > best.length ? o.list! : best), []);
    const settledSet = new Set(settled);
    // forked: observed lists must be totally ordered by prefix. Each distinct list is
    // compared with the settled one (below): one that neither extends nor is extended by
    // it is a branch of its own, counted once however many reads saw it.
    const distinct = new Map<string, readonly string[]>();
    for (const o of seen) distinct.set(JSON.stringify(o.list), o.list!);
    for (const l of distinct.values()) {
      if (!isPrefix(l, settled) && !isPrefix(settled, l)) note({ kind: 'forked', key, detail: `${short(l)} and ${short(settled)}: neither is a prefix of the other` });
    }
    const acked = ops.filter((o) => o.type === 'append' && o.outcome === 'ok' && o.value !== undefined);
    const lostValues = new Set<string>();
    for (const a of acked) {
      if (!settledSet.has(a.value!)) {
        lostValues.add(a.value!);
        note({ kind: 'lost', key, detail: `${a.value} acknowledged at ${Math.round(a.completeMs)} ms (via ${a.via ?? '?'}) is missing from the final ${short(settled)}` });
      }
    }

    // stale: every observation invoked after an ack must hold that value. Values already
    // counted as lost are not counted again here.
    const ackedByTime = acked.filter((a) => !lostValues.has(a.value!)).sort((x, y) => x.completeMs - y.completeMs);
    for (const o of seen) {
      const have = new Set(o.list!);
      const missing: string[] = [];
      for (const a of ackedByTime) {
        if (a.completeMs >= o.invokeMs) break;
        if (!have.has(a.value!)) missing.push(a.value!);
      }
      if (missing.length) {
        staleMaxMissing = Math.max(staleMaxMissing, missing.length);
        note({ kind: 'stale', key, detail: `${o.type} via ${o.via ?? '?'} invoked at ${Math.round(o.invokeMs)} ms missed ${missing.length} acknowledged: ${short(missing)}` });
      }
    }

    // reordered: in the settled list, a value after position i whose append was acknowledged
    // before the append at i was invoked. Suffix minimum of ack times, one pass.
    let minAckAfter = Infinity;
    let minAckValue = '';
    for (let i = settled.length - 1; i >= 0; i--) {
      const a = appends.get(settled[i]!);
      if (!a) continue;
      if (minAckAfter < a.invokeMs) {
        note({ kind: 'reordered', key, detail: `${a.value} (invoked at ${Math.round(a.invokeMs)} ms) is before ${minAckValue} (acknowledged at ${Math.round(minAckAfter)} ms)` });
      }
      if (a.outcome === 'ok' && a.completeMs < minAckAfter) { minAckAfter = a.completeMs; minAckValue = a.value!; }
    }
  }

  const total = (o: Outcome) => history.filter((h) => h.outcome === o).length;
  return {
    ops: history.length,
    ok: total('ok'),
    failed: total('fail'),
    unknown: total('unknown'),
    acked: history.filter((h) => h.type === 'append' && h.outcome === 'ok').length,
    ...counts,
    staleMaxMissing,
    keysWithoutFinal,
    examples,
  };
}

/**
 * The longest stretch per key with no ok operation, among stretches that overlap the
 * window [fromMs, toMs): how long a client of that key could get nothing done. A stretch
 * runs from the last ok completion before it (or fromMs) to the next ok completion (or
 * toMs when there is none in the window's key ops).
 */
export function longestUnavailability(history: readonly Op[], fromMs: number, toMs: number): { key: string; ms: number } {
  const byKey = new Map<string, number[]>();
  for (const op of history) {
    if (op.final) continue;
    let l = byKey.get(op.key);
    if (!l) byKey.set(op.key, (l = []));
    if (op.outcome === 'ok') l.push(op.completeMs);
  }
  let worst = { key: '', ms: 0 };
  for (const [key, done] of byKey) {
    done.sort((a, b) => a - b);
    let prev = fromMs;
    for (const t of done) {
      if (t <= fromMs) { prev = fromMs; continue; }
      if (prev >= toMs) break;
      const gap = t - prev;
      if (gap > worst.ms) worst = { key, ms: gap };
      prev = t;
    }
    if (prev < toMs && done.every((t) => t <= prev)) {
      // Nothing ok after prev inside the window: the key was down until its end.
      const gap = toMs - prev;
      if (gap > worst.ms) worst = { key, ms: gap };
    }
  }
  return worst;
}
