import type { ListSource } from '../controller.js';
import type { InformerEventType } from '../informer.js';

// An informer's cache and events, driven by the test: set() and remove() change the cache
// and call the handlers the way Informer does (add, update with the old object, delete).

interface Named { metadata: { name: string; namespace?: string } }

export class FakeInformer<T extends Named> implements ListSource<T> {
  private readonly store = new Map<string, T>();
  private readonly handlers: Record<InformerEventType, ((obj: T, old?: T) => void)[]> = { add: [], update: [], delete: [] };

  on(event: InformerEventType, cb: (obj: T, old?: T) => void): void { this.handlers[event].push(cb); }

  get(namespace: string | undefined, name: string): T | undefined { return this.store.get(`${namespace ?? ''}/${name}`); }

  list(namespace?: string): T[] {
    return [...this.store.values()].filter((o) => namespace === undefined || o.metadata.namespace === namespace);
  }

  set(obj: T): void {
    const k = `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    const old = this.store.get(k);
    this.store.set(k, obj);
    if (old) for (const cb of this.handlers.update) cb(obj, old);
    else for (const cb of this.handlers.add) cb(obj);
  }

  remove(obj: T): void {
    const k = `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    const old = this.store.get(k);
    if (!old) return;
    this.store.delete(k);
    for (const cb of this.handlers.delete) cb(old);
  }
}
