import { isolateHostIndex } from '../../common/isolate-hosts.js';
import type { DesiredStateSource, DesiredWorker } from '../serving/desired.js';

// An isolate host's share of the agent's tenants: the namespaces common/isolate-hosts.ts
// assigns to its index. It sees only the workers of its share (the desired-state source is
// filtered) and hosts only their DurableActors (ActorRuntime's `serves`).

export interface HostShare { index: number; count: number }

export const servesShare = (share: HostShare) => (namespace: string): boolean => isolateHostIndex(namespace, share.count) === share.index;

const namespaceOf = (key: string): string => key.slice(0, key.indexOf('/'));

/** A desired-state source that hands on only the workers of one share. */
export class SharedSource implements DesiredStateSource {
  private readonly serves: (namespace: string) => boolean;

  constructor(private readonly inner: DesiredStateSource, share: HostShare) {
    this.serves = servesShare(share);
  }

  start(onUpdate: (workers: DesiredWorker[]) => void): Promise<void> {
    return this.inner.start((workers) => onUpdate(workers.filter((w) => this.serves(namespaceOf(w.key)))));
  }

  stop(): Promise<void> { return this.inner.stop(); }
}
