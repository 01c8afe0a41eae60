import type { Logger } from '../../common/log.js';
import { isNotFound, type KubeApi } from './kube-client.js';

// Kubernetes Events on our objects (`kubectl describe ew NAME` shows them). Best effort:
// an Event that cannot be written is logged, never retried into a reconcile failure.
//
// Identical Events (same object, type, reason and message) are aggregated the way
// client-go's EventCorrelator does it (tools/record/events_cache.go, eventLogger.eventObserve):
// the first is created with count 1, each repeat patches that Event's count and
// lastTimestamp, so four deploys read "Serving (x4 over 3m)" instead of four Events. The
// cache of what was written lives in this process, as client-go's does: a new leader
// starts a new Event for the same thing. Not copied from client-go: the spam filter (a
// token bucket per object) and the folding of *similar* Events (same reason, other
// messages) into "(combined from similar events)"; the operator records transitions of
// conditions only, which are rare.

export interface InvolvedObject {
  apiVersion: string;
  kind: string;
  name: string;
  namespace: string;
  uid?: string;
}

export const REPORTING_COMPONENT = 'edge.isolates.dev/operator';
const SOURCE_COMPONENT = 'edge-operator';
/** client-go's maxLruCacheEntries: the Events remembered for aggregation. */
export const EVENT_CACHE_ENTRIES = 4096;

/** Where reconcilers report what happened to an object; fake/events.ts keeps them in a list. */
export interface EventSink {
  record(obj: InvolvedObject, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void>;
}

interface Seen { name: string; count: number }

export class EventRecorder implements EventSink {
  /** Aggregation key -> the Event written for it; a Map in insertion order is the LRU. */
  private readonly seen = new Map<string, Seen>();
  /** Records of one key run one after another, so two repeats never both create. */
  private readonly chains = new Map<string, Promise<void>>();

  constructor(
    private readonly client: KubeApi,
    private readonly instance: string,
    private readonly log: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {}

  record(obj: InvolvedObject, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const msg = message.slice(0, 1024);
    // client-go's getEventKey: source, involved object, type, reason, message.
    const key = JSON.stringify([SOURCE_COMPONENT, obj.apiVersion, obj.kind, obj.namespace, obj.name, obj.uid ?? '', type, reason, msg]);
    const next = (this.chains.get(key) ?? Promise.resolve()).then(() => this.write(key, obj, type, reason, msg));
    this.chains.set(key, next);
    void next.finally(() => { if (this.chains.get(key) === next) this.chains.delete(key); });
    return next;
  }

  private async write(key: string, obj: InvolvedObject, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const now = this.now().toISOString();
    const collection = `/api/v1/namespaces/${obj.namespace}/events`;
    const last = this.seen.get(key);
    try {
      if (last) {
        const count = last.count + 1;
        try {
          await this.client.request('PATCH', `${collection}/${last.name}`, { patch: 'merge', body: { count, lastTimestamp: now } });
          this.remember(key, { ...last, count });
          return;
        } catch (err) {
          // Events expire (the apiserver's --event-ttl, 1 h by default): start a new one.
          if (!isNotFound(err)) throw err;
          this.seen.delete(key);
        }
      }
      const created = await this.client.request<{ metadata?: { name?: string } }>('POST', collection, {
        body: {
          apiVersion: 'v1',
          kind: 'Event',
          metadata: { generateName: `${obj.name}.`, namespace: obj.namespace },
          involvedObject: obj,
          type,
          reason,
          message,
          source: { component: SOURCE_COMPONENT },
          reportingComponent: REPORTING_COMPONENT,
          reportingInstance: this.instance,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
      const name = created?.metadata?.name;
      if (name) this.remember(key, { name, count: 1 });
    } catch (err) {
      this.log.warn('could not record event', { object: `${obj.kind} ${obj.namespace}/${obj.name}`, reason, error: err });
    }
  }

  private remember(key: string, s: Seen): void {
    this.seen.delete(key);
    this.seen.set(key, s);
    if (this.seen.size > EVENT_CACHE_ENTRIES) this.seen.delete(this.seen.keys().next().value!);
  }
}
