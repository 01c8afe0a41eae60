import { errorMessage, type Logger } from '../../common/log.js';
import { KubeClient, KubeError, type KubeApi, type KubeCredentials } from './kube-client.js';

// Lease-based leader election with client-go's semantics (tools/leaderelection):
//
// - A follower takes over only when the Lease record (holder, renewTime, resourceVersion)
//   it observed has not changed for the lease duration, timed on its own monotonic clock
//   from the moment it observed it. Remote timestamps are never compared with the local
//   clock, so clock skew between replicas cannot cause two leaders.
// - Every write carries the resourceVersion that was read: of two candidates racing, the
//   apiserver lets one win and answers 409 to the other.
// - The leader renews every retryPeriod; if no renewal succeeded for renewDeadline it stops
//   leading. renewDeadline < leaseDuration is what keeps an old leader from overlapping a
//   new one: the old one gives up (measured from before its last successful write) before
//   anyone else may take over (measured from after they saw that write).
// - `isLeader` is also bounded by that deadline when read, so a blocked event loop or a
//   hung request cannot stretch a leadership term past it.
// - After losing leadership the elector does not compete again; like client-go's
//   RunOrDie, the process is expected to exit and start fresh.
// - release() (ReleaseOnCancel) clears the holder so a successor takes over at once.
//
// The Lease is read and written through KubeClient, one keep-alive connection: client-node's
// typed clients make a new https.Agent, so a new TLS connection, for every request, and a
// leader renews every retryPeriod (two requests each time).

export interface LeaderElectionOptions {
  kc: KubeCredentials;
  /** The apiserver (default: a KubeClient of kc); a seam for tests. */
  api?: KubeApi;
  namespace: string;
  /** Name of the Lease object. */
  name: string;
  /** Unique per process (e.g. pod name + random suffix): two processes with one identity would both lead. */
  identity: string;
  /** How long followers wait, after the last change they saw, before taking over. Default 15000. */
  leaseDurationMs?: number;
  /** How long the leader keeps trying to renew before it gives up. Default 10000. */
  renewDeadlineMs?: number;
  /** Interval between attempts to acquire or renew. Default 2000. */
  retryPeriodMs?: number;
  log: Logger;
  /** Called once when this elector becomes the leader. */
  onStartedLeading(): void;
  /**
   * Called once when a leadership term ends, for whatever reason: renewals failed for
   * renewDeadlineMs, another holder was observed, or stop()/release() was called while
   * leading (check your own shutdown flag to tell these apart, as with client-go).
   */
  onStoppedLeading(): void;
  /** Called when the observed holder changes to a new (non-empty) identity, this one included. */
  onNewLeader?(identity: string): void;
}

/** The parts of the Lease record whose change proves the holder is alive. */
interface ObservedRecord {
  holder: string;
  renewTime: string;
  resourceVersion: string;
  leaseDurationSeconds: number;
}

type AttemptResult = 'acquired' | 'held-by-other' | 'failed';

/** The Lease fields the elector reads and writes (coordination.k8s.io/v1), as the apiserver's JSON has them. */
interface Lease {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string; namespace?: string; resourceVersion?: string;
    labels?: Record<string, string>; annotations?: Record<string, string>; ownerReferences?: unknown[];
  };
  spec?: LeaseSpec;
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  /** MicroTime: RFC 3339 with exactly six fractional digits. */
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
  /** Fields of newer API versions are kept as they were read. */
  [field: string]: unknown;
}

/** HTTP status of an error from the apiserver, if it has one. */
function apiStatus(err: unknown): number | undefined {
  return err instanceof KubeError ? err.code : undefined;
}

/** Now as a MicroTime (metav1.MicroTime parses exactly six fractional digits). */
function microTimeNow(): string {
  return new Date().toISOString().replace(/Z$/, '000Z');
}

const leasesPath = (namespace: string, name?: string) =>
  `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases${name === undefined ? '' : `/${encodeURIComponent(name)}`}`;

export class LeaderElector {
  readonly identity: string;
  private readonly opts: LeaderElectionOptions;
  private readonly api: KubeApi;
  private readonly log: Logger;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;

  private observed: ObservedRecord | undefined;
  private lastLease: Lease | undefined;
  /** performance.now() when `observed` last changed. */
  private observedAt = 0;
  private reportedLeader: string | undefined;
  private leading = false;
  /** performance.now() taken before the read that led to our last successful write. */
  private lastRenewAt = 0;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Set once a term was lost: the elector then stops competing. */
  private finished = false;
  private readonly stopController = new AbortController();
  private loop: Promise<void> | undefined;
  private halting: Promise<boolean> | undefined;

  constructor(opts: LeaderElectionOptions) {
    this.opts = opts;
    this.identity = opts.identity;
    this.leaseDurationMs = opts.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = opts.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = opts.retryPeriodMs ?? 2_000;
    this.log = opts.log.child({ lease: `${opts.namespace}/${opts.name}`, identity: opts.identity });
    this.api = opts.api ?? new KubeClient(opts.kc);
    if (!opts.identity) throw new Error('leader election: identity must not be empty');
    if (!(this.leaseDurationMs > this.renewDeadlineMs)) {
      throw new Error(`leader election: leaseDurationMs (${this.leaseDurationMs}) must be greater than renewDeadlineMs (${this.renewDeadlineMs})`);
    }
    if (!(this.renewDeadlineMs > this.retryPeriodMs) || !(this.retryPeriodMs > 0)) {
      throw new Error(`leader election: need 0 < retryPeriodMs (${this.retryPeriodMs}) < renewDeadlineMs (${this.renewDeadlineMs})`);
    }
  }

  /** True while this elector holds the lease and its last renewal is within renewDeadlineMs. */
  get isLeader(): boolean {
    return this.leading && performance.now() - this.lastRenewAt < this.renewDeadlineMs;
  }

  /** Holder named by the last Lease record seen (undefined: none seen yet, or released). */
  get leader(): string | undefined {
    return this.observed?.holder || undefined;
  }

  /**
   * Starts competing for the lease in the background. Resolves once the first attempt has
   * finished, so `isLeader` and `leader` reflect the Lease (if it was won, onStartedLeading
   * has already run); never waits for leadership.
   */
  start(): Promise<void> {
    if (this.loop) throw new Error('leader election: start() called twice');
    if (this.stopped) throw new Error('leader election: start() after stop()');
    let firstAttempt!: () => void;
    const first = new Promise<void>((resolve) => { firstAttempt = resolve; });
    this.loop = this.run(firstAttempt).catch((err: unknown) => {
      // run() handles its own errors; reaching here is a bug, and must not leave a leader behind.
      this.log.error('leader election loop crashed', { error: err });
      this.loseLeadership('election loop crashed');
      firstAttempt();
    });
    return first;
  }

  /**
   * Stops competing and renewing. The Lease is left as it is, so if this was the leader a
   * successor waits out the lease duration (what a crash looks like). Calls
   * onStoppedLeading if this was leading.
   */
  async stop(): Promise<void> {
    const wasLeading = await this.halt();
    if (wasLeading) this.notifyStopped();
  }

  /**
   * Stops, and if the Lease names this elector, clears its holder so a successor takes
   * over at once. Best effort: when the write fails the lease simply expires.
   */
  async release(): Promise<void> {
    const wasLeading = await this.halt();
    try {
      await this.releaseLease();
    } finally {
      if (wasLeading) this.notifyStopped();
    }
  }

  private halt(): Promise<boolean> {
    this.halting ??= (async () => {
      const wasLeading = this.leading;
      this.stopped = true;
      this.stopController.abort();
      clearTimeout(this.deadlineTimer);
      await this.loop;
      this.leading = false;
      return wasLeading;
    })();
    return this.halting;
  }

  private async run(firstAttempt: () => void): Promise<void> {
    // Acquire: retry with jitter (as client-go's JitterUntil) so candidates that started
    // together do not keep colliding.
    for (;;) {
      const result = await this.attempt(this.renewDeadlineMs);
      if (!this.stopped && result === 'acquired') this.becomeLeader();
      firstAttempt();
      if (this.stopped) return;
      if (this.leading) break;
      await this.sleep(this.retryPeriodMs * (1 + 0.2 * Math.random()));
      if (this.stopped) return;
    }

    // Renew until stopped or lost.
    while (!this.stopped && this.leading) {
      await this.sleep(this.retryPeriodMs);
      if (this.stopped || !this.leading) return;
      const remaining = this.lastRenewAt + this.renewDeadlineMs - performance.now();
      const result = await this.attempt(Math.max(remaining, 1));
      if (this.stopped || !this.leading) return;
      if (result === 'held-by-other') {
        this.loseLeadership(`the Lease names another holder (${this.observed?.holder ?? 'unknown'})`);
      } else if (result === 'failed' && performance.now() - this.lastRenewAt >= this.renewDeadlineMs) {
        this.loseLeadership(`no successful renewal within ${this.renewDeadlineMs} ms`);
      }
    }
  }

  private becomeLeader(): void {
    this.leading = true;
    this.log.info('became leader', { leaseTransitions: this.observedTransitions });
    this.armDeadline();
    try {
      this.opts.onStartedLeading();
    } catch (err) {
      this.log.error('onStartedLeading threw', { error: err });
    }
  }

  /** Fires when renewDeadline passes without a renewal, even if a request hangs. */
  private armDeadline(): void {
    clearTimeout(this.deadlineTimer);
    const ms = Math.max(0, this.lastRenewAt + this.renewDeadlineMs - performance.now());
    this.deadlineTimer = setTimeout(() => {
      if (this.leading && !this.stopped) this.loseLeadership(`no successful renewal within ${this.renewDeadlineMs} ms`);
    }, ms);
  }

  private loseLeadership(reason: string): void {
    if (!this.leading) return;
    this.leading = false;
    this.finished = true;
    clearTimeout(this.deadlineTimer);
    this.stopController.abort();
    this.log.error('lost leadership', { reason });
    this.notifyStopped();
  }

  private notifyStopped(): void {
    try {
      this.opts.onStoppedLeading();
    } catch (err) {
      this.log.error('onStoppedLeading threw', { error: err });
    }
  }

  private get observedTransitions(): number | undefined {
    return this.lastLease?.spec?.leaseTransitions;
  }

  /** One tryAcquireOrRenew, bounded by `timeoutMs` and by stop(). */
  private async attempt(timeoutMs: number): Promise<AttemptResult> {
    if (this.stopped || this.finished) return 'failed';
    const signal = AbortSignal.any([this.stopController.signal, AbortSignal.timeout(Math.max(1, Math.ceil(timeoutMs)))]);
    try {
      return await this.tryAcquireOrRenew(signal);
    } catch (err) {
      if (!this.stopped) {
        const status = apiStatus(err);
        const msg = signal.aborted && !this.stopController.signal.aborted ? `timed out after ${Math.round(timeoutMs)} ms` : errorMessage(err).split('\n', 1)[0];
        // 409: another candidate wrote first; that is the protocol working, not an error.
        if (status === 409) this.log.debug('lost a write race for the lease', { leading: this.leading });
        else this.log.warn(this.leading ? 'renewing the lease failed' : 'acquiring the lease failed', { error: msg, status });
      }
      return 'failed';
    }
  }

  private async tryAcquireOrRenew(signal: AbortSignal): Promise<AttemptResult> {
    const { namespace, name } = this.opts;
    const startedAt = performance.now();
    let lease: Lease;
    try {
      lease = await this.api.request<Lease>('GET', leasesPath(namespace, name), { signal });
    } catch (err) {
      if (apiStatus(err) !== 404) throw err;
      const now = microTimeNow();
      const created = await this.api.request<Lease>('POST', leasesPath(namespace), {
        signal,
        body: {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name, namespace },
          spec: {
            holderIdentity: this.identity,
            leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000),
            acquireTime: now,
            renewTime: now,
            leaseTransitions: 0,
          },
        },
      });
      this.observe(created);
      this.lastRenewAt = startedAt;
      return 'acquired';
    }
    this.observe(lease);
    const rec = this.observed!;
    const iAmHolder = rec.holder === this.identity;
    if (rec.holder !== '' && !iAmHolder) {
      if (this.leading) return 'held-by-other';
      const waitMs = Math.max(this.leaseDurationMs, rec.leaseDurationSeconds * 1000);
      if (performance.now() - this.observedAt < waitMs) return 'held-by-other';
    }
    const old: LeaseSpec = lease.spec ?? {};
    const now = microTimeNow();
    const spec: LeaseSpec = {
      ...old,
      holderIdentity: this.identity,
      leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000),
      renewTime: now,
      acquireTime: iAmHolder && old.acquireTime ? old.acquireTime : now,
      leaseTransitions: iAmHolder ? (old.leaseTransitions ?? 0) : (old.leaseTransitions ?? 0) + 1,
    };
    if (!iAmHolder) this.log.info('taking over the lease', { from: rec.holder || '(released)', leaseTransitions: spec.leaseTransitions });
    const updated = await this.api.request<Lease>('PUT', leasesPath(namespace, name), { signal, body: this.leaseBody(lease, spec) });
    this.observe(updated);
    this.lastRenewAt = startedAt;
    if (this.leading) this.armDeadline();
    return 'acquired';
  }

  /** A PUT body from a read Lease: its identity and resourceVersion (the precondition), a new spec. */
  private leaseBody(lease: Lease, spec: LeaseSpec): Lease {
    const m = lease.metadata ?? {};
    return {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        name: m.name, namespace: m.namespace, resourceVersion: m.resourceVersion,
        labels: m.labels, annotations: m.annotations, ownerReferences: m.ownerReferences,
      },
      spec,
    };
  }

  /** Records the Lease as seen now; the lease-duration clock restarts only when it changed. */
  private observe(lease: Lease): void {
    this.lastLease = lease;
    const rec: ObservedRecord = {
      holder: lease.spec?.holderIdentity ?? '',
      renewTime: lease.spec?.renewTime ?? '',
      resourceVersion: lease.metadata?.resourceVersion ?? '',
      leaseDurationSeconds: lease.spec?.leaseDurationSeconds ?? 0,
    };
    const prev = this.observed;
    if (!prev || prev.holder !== rec.holder || prev.renewTime !== rec.renewTime || prev.resourceVersion !== rec.resourceVersion) {
      this.observed = rec;
      this.observedAt = performance.now();
    }
    if (rec.holder === '') this.reportedLeader = undefined;
    else if (rec.holder !== this.reportedLeader) {
      this.reportedLeader = rec.holder;
      this.log.info('new leader observed', { leader: rec.holder });
      try {
        this.opts.onNewLeader?.(rec.holder);
      } catch (err) {
        this.log.error('onNewLeader threw', { error: err });
      }
    }
  }

  private async releaseLease(): Promise<void> {
    const { namespace, name } = this.opts;
    for (let i = 0; i < 3; i++) {
      const signal = AbortSignal.timeout(Math.max(1, Math.ceil(this.renewDeadlineMs)));
      try {
        const lease = await this.api.request<Lease>('GET', leasesPath(namespace, name), { signal });
        if (lease.spec?.holderIdentity !== this.identity) return;
        const now = microTimeNow();
        const spec: LeaseSpec = {
          ...lease.spec,
          holderIdentity: undefined,
          // client-go writes 1 s here: whoever reads the released record need not wait long.
          leaseDurationSeconds: 1,
          renewTime: now,
          acquireTime: now,
        };
        const updated = await this.api.request<Lease>('PUT', leasesPath(namespace, name), { signal, body: this.leaseBody(lease, spec) });
        this.observe(updated);
        this.log.info('released the lease');
        return;
      } catch (err) {
        // 409: the lease changed between read and write (a renewal that was still in flight); read again.
        if (apiStatus(err) === 409) continue;
        this.log.warn('could not release the lease; it will expire instead', { error: errorMessage(err).split('\n', 1)[0], status: apiStatus(err) });
        return;
      }
    }
    this.log.warn('could not release the lease after 3 conflicting writes; it will expire instead');
  }

  private sleep(ms: number): Promise<void> {
    const signal = this.stopController.signal;
    return new Promise((resolve) => {
      if (signal.aborted) { resolve(); return; }
      const onAbort = (): void => { clearTimeout(timer); resolve(); };
      const timer = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve(); }, ms);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}
