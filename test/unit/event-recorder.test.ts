import { describe, expect, it } from 'vitest';
import { createLogger } from '../../common/log.js';
import { EventRecorder, EVENT_CACHE_ENTRIES, type InvolvedObject } from '../../operator/runtime/events.js';
import { KubeError } from '../../operator/runtime/kube-client.js';
import { FakeKubeApi } from '../../operator/runtime/fake/kube-api.js';

// The operator's Events aggregate as client-go's EventCorrelator does: a repeat of the
// same object, type, reason and message patches count and lastTimestamp of the first
// Event; anything else is a new Event. (test/integration/operator-ux.test.ts checks the
// real apiserver: four deploys, one Event with count 4.)

const NS = 'shop';
const EVENTS = `/api/v1/namespaces/${NS}/events`;
const hello: InvolvedObject = { apiVersion: 'edge.isolates.dev/v1alpha1', kind: 'EdgeWorker', name: 'hello', namespace: NS, uid: 'u1' };

interface Ev { metadata: { name: string }; type: string; reason: string; message: string; count: number; firstTimestamp: string; lastTimestamp: string; involvedObject: InvolvedObject }

function recorder() {
  const api = new FakeKubeApi();
  let t = Date.parse('2026-01-01T00:00:00Z');
  const lines: string[] = [];
  const rec = new EventRecorder(api, 'op-1', createLogger({}, (l) => lines.push(l), 'debug'), () => new Date(t += 1000));
  return { api, rec, lines, events: () => api.created<Ev>(EVENTS) };
}

describe('EventRecorder', () => {
  it('turns four identical Events into one with count 4 and the last time', async () => {
    const { api, rec, events } = recorder();
    for (let i = 0; i < 4; i++) await rec.record(hello, 'Normal', 'Serving', 'Ready=True: serving in eu-west 1/1 agents');
    const [ev, ...more] = events();
    expect(more).toEqual([]);
    expect(ev).toMatchObject({ reason: 'Serving', count: 4, firstTimestamp: '2026-01-01T00:00:01.000Z', lastTimestamp: '2026-01-01T00:00:04.000Z' });
    expect(api.writes()).toEqual(['POST /api/v1/namespaces/shop/events', ...Array(3).fill(`PATCH ${EVENTS}/${ev!.metadata.name}`)]);
  });

  it('keeps Events apart when the message, the reason, the type or the object differ', async () => {
    const { rec, events } = recorder();
    await rec.record(hello, 'Normal', 'Serving', 'a');
    await rec.record(hello, 'Normal', 'Serving', 'b');
    await rec.record(hello, 'Warning', 'Serving', 'a');
    await rec.record(hello, 'Normal', 'Placed', 'a');
    await rec.record({ ...hello, name: 'other' }, 'Normal', 'Serving', 'a');
    // The same name recreated is another object (another uid).
    await rec.record({ ...hello, uid: 'u2' }, 'Normal', 'Serving', 'a');
    await rec.record(hello, 'Normal', 'Serving', 'a');
    const counts = events().map((e) => `${e.involvedObject.name}/${e.involvedObject.uid} ${e.type} ${e.reason} ${e.message} x${e.count}`).sort();
    expect(counts).toEqual([
      'hello/u1 Normal Placed a x1', 'hello/u1 Normal Serving a x2', 'hello/u1 Normal Serving b x1', 'hello/u1 Warning Serving a x1',
      'hello/u2 Normal Serving a x1', 'other/u1 Normal Serving a x1',
    ]);
  });

  it('aggregates repeats recorded at once (reconcilers do not await them)', async () => {
    const { rec, events } = recorder();
    await Promise.all(Array.from({ length: 5 }, () => rec.record(hello, 'Normal', 'Serving', 'm')));
    expect(events().map((e) => e.count)).toEqual([5]);
  });

  it('starts a new Event when the old one expired (404 on the patch), and logs other failures without throwing', async () => {
    const { api, rec, events, lines } = recorder();
    await rec.record(hello, 'Normal', 'Serving', 'm');
    const first = events()[0]!.metadata.name;
    api.delete(`${EVENTS}/${first}`);
    await rec.record(hello, 'Normal', 'Serving', 'm');
    const [second] = events();
    expect(second!.metadata.name).not.toBe(first);
    expect(second!.count).toBe(1);
    api.failNext('PATCH', `${EVENTS}/${second!.metadata.name}`, new KubeError(500, 'InternalError', 'boom'));
    await expect(rec.record(hello, 'Normal', 'Serving', 'm')).resolves.toBeUndefined();
    expect(lines.some((l) => l.includes('could not record event'))).toBe(true);
    await rec.record(hello, 'Normal', 'Serving', 'm');
    expect(events().map((e) => e.count)).toEqual([2]);
  });

  it('forgets the least recently used Event past its cache size, as client-go does', async () => {
    const { rec, events } = recorder();
    await rec.record(hello, 'Normal', 'Serving', 'first');
    for (let i = 0; i < EVENT_CACHE_ENTRIES; i++) await rec.record(hello, 'Normal', 'Other', `m${i}`);
    await rec.record(hello, 'Normal', 'Serving', 'first');
    expect(events().filter((e) => e.message === 'first').map((e) => e.count)).toEqual([1, 1]);
  }, 60_000);
});
