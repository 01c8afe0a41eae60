import type { Logger } from '../../common/log.js';
import type { KubeClient } from './kube-client.js';

// Kubernetes Events on our objects (`kubectl describe ew NAME` shows them). Best effort:
// an Event that cannot be written is logged, never retried into a reconcile failure.

export interface InvolvedObject {
  apiVersion: string;
  kind: string;
  name: string;
  namespace: string;
  uid?: string;
}

export const REPORTING_COMPONENT = 'edge.isolates.dev/operator';

export class EventRecorder {
  constructor(private readonly client: KubeClient, private readonly instance: string, private readonly log: Logger) {}

  async record(obj: InvolvedObject, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const now = new Date().toISOString();
    const body = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { generateName: `${obj.name}.`, namespace: obj.namespace },
      involvedObject: obj,
      type,
      reason,
      message: message.slice(0, 1024),
      source: { component: 'edge-operator' },
      reportingComponent: REPORTING_COMPONENT,
      reportingInstance: this.instance,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    try {
      await this.client.request('POST', `/api/v1/namespaces/${obj.namespace}/events`, { body });
    } catch (err) {
      this.log.warn('could not record event', { object: `${obj.kind} ${obj.namespace}/${obj.name}`, reason, error: err });
    }
  }
}
