import { isDeepStrictEqual } from 'node:util';
import type { Condition } from '../../common/api/index.js';
import type { ConditionReason, ConditionType } from '../../common/reasons.js';

// metav1.Condition bookkeeping: lastTransitionTime moves only when status flips, so a
// reconcile that finds nothing new writes nothing new.

/** What a reconciler wants: only the types and reasons of common/reasons.ts. */
export type ConditionInput = Omit<Condition, 'lastTransitionTime' | 'type' | 'reason'> & { type: ConditionType; reason: ConditionReason };

export function setConditions(existing: Condition[] | undefined, wanted: ConditionInput[], now: Date): Condition[] {
  const byType = new Map((existing ?? []).map((c) => [c.type, c]));
  return wanted.map((w) => {
    const cur = byType.get(w.type);
    const lastTransitionTime = cur && cur.status === w.status ? cur.lastTransitionTime : now.toISOString().replace(/\.\d{3}Z$/, 'Z');
    return { ...w, lastTransitionTime };
  });
}

/** The conditions whose status or reason differ from before: what deserves an Event. */
export function transitions(before: Condition[] | undefined, after: Condition[]): Condition[] {
  const prev = new Map((before ?? []).map((c) => [c.type, c]));
  return after.filter((c) => {
    const p = prev.get(c.type);
    return !p || p.status !== c.status || p.reason !== c.reason;
  });
}

export const findCondition = (list: Condition[] | undefined, type: string) => list?.find((c) => c.type === type);

/**
 * Whether a computed status equals the one the object has. Not JSON.stringify: the cached
 * object's keys come back in the schema's order, which is not the order the status was built
 * in, and every reconcile would then rewrite an unchanged status.
 */
export const sameStatus = (computed: unknown, current: unknown): boolean =>
  isDeepStrictEqual(JSON.parse(JSON.stringify(computed)) as unknown, JSON.parse(JSON.stringify(current ?? {})) as unknown);
