import type { AiBinding } from '../api/index.js';
import type { AiServiceRef, BindingLookup, ConfigMapContent } from '../resolve-bindings.js';

// An in-memory BindingLookup for unit tests (`implements` is the compile-time check that it
// still fits the interface): objects are put in by hand, and every aiServices question is
// recorded, so a test can see what the resolver asked for.

export class FakeBindingLookup implements BindingLookup {
  /** namespace/name -> data; binaryData in configMapBinaries. */
  readonly configMaps = new Map<string, Record<string, string>>();
  readonly configMapBinaries = new Map<string, Record<string, Uint8Array>>();
  readonly secrets = new Map<string, Record<string, string>>();
  readonly actorUids = new Map<string, string>();
  /** binding name -> region -> Service; what aiServices answers for a binding it is asked about. */
  readonly services = new Map<string, Record<string, AiServiceRef>>();
  readonly aiCalls: { namespace: string; worker: string; bindings: string[] }[] = [];

  configMap(namespace: string, name: string): Promise<ConfigMapContent | undefined> {
    const key = `${namespace}/${name}`;
    const data = this.configMaps.get(key);
    const binaryData = this.configMapBinaries.get(key);
    return Promise.resolve(data || binaryData ? { data: data ?? {}, binaryData: binaryData ?? {} } : undefined);
  }

  secret(namespace: string, name: string): Promise<Record<string, string> | undefined> {
    return Promise.resolve(this.secrets.get(`${namespace}/${name}`));
  }

  durableActorUid(namespace: string, name: string): Promise<string | undefined> {
    return Promise.resolve(this.actorUids.get(`${namespace}/${name}`));
  }

  aiServices(namespace: string, worker: string, bindings: readonly AiBinding[]): Promise<Record<string, Record<string, AiServiceRef>>> {
    this.aiCalls.push({ namespace, worker, bindings: bindings.map((b) => b.name) });
    const out: Record<string, Record<string, AiServiceRef>> = {};
    for (const b of bindings) {
      const refs = this.services.get(b.name);
      if (refs) out[b.name] = refs;
    }
    return Promise.resolve(out);
  }
}
