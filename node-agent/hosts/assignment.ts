import { isCordonShare, isolateHostIndex } from '../../common/isolate-hosts.js';
import { refNamespace } from '../../common/keys.js';
import type { DesiredStateSource, DesiredWorker } from '../serving/desired.js';

// An isolate host's share of the agent's tenants: the namespaces common/isolate-hosts.ts
// assigns to its index. It sees only the workers of its share (the desired-state source is
// filtered) and hosts only their DurableActors (ActorRuntime's `serves`).
//
// The cordon host (index = count, hosts/cordon.ts) has no share of its own: it serves the
// workers of the namespaces the front has cordoned, a set the front tells it, and no actors.
// Their home host keeps them loaded meanwhile (the front routes past it), so a namespace
// moves either way without a moment in which no host has it.

export interface HostShare { index: number; count: number }

/** The namespaces whose DurableActors a host serves (none for the cordon host). */
export const servesShare = (share: HostShare) => (namespace: string): boolean => isolateHostIndex(namespace, share.count) === share.index;

/** A desired-state source that hands on only the workers of one share. */
export class SharedSource implements DesiredStateSource {
  private readonly serves: (namespace: string) => boolean;
  private cordoned = new Set<string>();
  private last: DesiredWorker[] | undefined;
  private onUpdate: ((workers: DesiredWorker[]) => void) | undefined;

  constructor(private readonly inner: DesiredStateSource, share: HostShare) {
    this.serves = isCordonShare(share) ? (ns) => this.cordoned.has(ns) : servesShare(share);
  }

  start(onUpdate: (workers: DesiredWorker[]) => void): Promise<void> {
    this.onUpdate = onUpdate;
    return this.inner.start((workers) => {
      this.last = workers;
      onUpdate(workers.filter((w) => this.serves(refNamespace(w.key))));
    });
  }

  /** The front's cordoned namespaces (only the cordon host's filter reads them). */
  setCordoned(namespaces: readonly string[]): void {
    this.cordoned = new Set(namespaces);
    if (this.last && this.onUpdate) this.onUpdate(this.last.filter((w) => this.serves(refNamespace(w.key))));
  }

  stop(): Promise<void> { return this.inner.stop(); }

  placedElsewhere(host: string, path: string): { key: string; regions: string[] } | undefined {
    return this.inner.placedElsewhere?.(host, path);
  }
}
