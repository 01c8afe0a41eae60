import type { EventSink, InvolvedObject } from '../events.js';

// Keeps recorded Events in a list, in order.

export interface RecordedEvent { object: InvolvedObject; type: 'Normal' | 'Warning'; reason: string; message: string }

export class FakeEventSink implements EventSink {
  readonly events: RecordedEvent[] = [];

  record(object: InvolvedObject, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    this.events.push({ object, type, reason, message });
    return Promise.resolve();
  }

  /** "Type Reason" of each event: the short form tests compare. */
  summary(): string[] { return this.events.map((e) => `${e.type} ${e.reason}`); }
}
