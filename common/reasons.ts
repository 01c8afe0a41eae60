// The words the system says why with, in one place. Condition types and reasons are API:
// users and scripts match on them (kubectl wait, Events, `edge deploy`), so the strings
// never change; the operator writes them and the CLI reads them from here. Actor
// deactivation reasons are the actor host's words, mapped to isolate disposal reasons.

/** The condition types of EdgeWorker and DurableActor status. */
export const ConditionTypes = {
  Ready: 'Ready',
  Placed: 'Placed',
  Degraded: 'Degraded',
} as const;
export type ConditionType = (typeof ConditionTypes)[keyof typeof ConditionTypes];

/** Reasons of EdgeWorker and DurableActor conditions (and of the Events recorded for them). */
export const ConditionReasons = {
  // Ready=True, Placed=True, Degraded=False.
  Serving: 'Serving',
  Placed: 'Placed',
  AsExpected: 'AsExpected',
  // The spec, or an object it names, has to change.
  SourceNotFound: 'SourceNotFound',
  SecretNotFound: 'SecretNotFound',
  BundleInvalid: 'BundleInvalid',
  ActorNotFound: 'ActorNotFound',
  WorkerNotFound: 'WorkerNotFound',
  WorkerNotInRegion: 'WorkerNotInRegion',
  NoRegions: 'NoRegions',
  RegionUnavailable: 'RegionUnavailable',
  // The cluster admin's EdgePolicy and model catalogue refuse the spec.
  LimitExceeded: 'LimitExceeded',
  RouteConflict: 'RouteConflict',
  RouteNotAllowed: 'RouteNotAllowed',
  ModelNotAllowed: 'ModelNotAllowed',
  GpuQuotaExceeded: 'GpuQuotaExceeded',
  // Converging: waiting helps.
  AgentsNotReady: 'AgentsNotReady',
  NotFullyAvailable: 'NotFullyAvailable',
  WorkerNotReady: 'WorkerNotReady',
  NoAgents: 'NoAgents',
} as const;
export type ConditionReason = (typeof ConditionReasons)[keyof typeof ConditionReasons];

/** Why the actor host stops hosting an actor here (its logs' `reason`). */
export const ActorDeactivationReasons = {
  // Planned hand-overs: the actor moves or restarts cleanly, nothing failed.
  Idle: 'idle',
  RingChange: 'ring-change',
  NewVersion: 'new-version',
  Deleted: 'deleted',
  Drain: 'drain',
  // The agent stops without handing over (its claims lapse).
  Shutdown: 'shutdown',
  // Failures: the actor's in-memory state cannot be trusted.
  Reset: 'reset',
  Fenced: 'fenced',
  WriteFailed: 'write-failed',
} as const;
export type ActorDeactivationReason = (typeof ActorDeactivationReasons)[keyof typeof ActorDeactivationReasons];
