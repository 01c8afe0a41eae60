import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import * as z from 'zod';
// The modules, not api/index.js, which would also build the CRDs' schemas (see resolve-bindings.ts).
import { API_VERSION } from '../../common/api/group.js';
import { EdgeWorkerSchema, type AiBinding } from '../../common/api/edgeworker.js';
import { EdgeModelSpecSchema, type AiTaskType } from '../../common/api/edgepolicy.js';
import type { Logger } from '../../common/log.js';
import { modelServerRef } from '../../common/model-servers.js';
import {
  aiServerKey, builtinRunSettings, decodeBinaryData, resolveWorker, sha256Digest, workerVersion, type AiServiceRef, type BindingLookup, type ConfigMapContent,
} from '../../common/resolve-bindings.js';
import { workerRef } from '../../common/keys.js';
import type { DesiredStateSource, DesiredWorker } from '../serving/desired.js';
import { aiUrlFromTemplate, isolateWorkerEnv, type AiUrl } from './worker-env.js';
import { STANDALONE_REGION } from './defaults.js';

// The directory-backed DesiredStateSource (`edge agent --workers DIR`); the operator's
// NATS-backed one (nats-source.ts) plugs in behind the same interface (serving/desired.ts).
// Both resolve bindings the same way (common/resolve-bindings.ts): here the lookups are
// answered from the manifests in the directory.

export { STANDALONE_REGION } from './defaults.js';

export interface DirectorySourceOptions {
  /**
   * The region whose model-server Services ai bindings reach, under the names the operator
   * gives them (common/model-servers.ts). Default STANDALONE_REGION.
   */
  region?: string;
  /** How to reach a model server's Service (the agent's --ai-url-template; cluster DNS by default). */
  aiUrl?: AiUrl;
}

const KeyedSchema = z.looseObject({
  apiVersion: z.string(),
  kind: z.string(),
  metadata: z.looseObject({ name: z.string(), namespace: z.string().optional(), uid: z.string().optional() }),
  data: z.record(z.string(), z.string()).optional(),
  stringData: z.record(z.string(), z.string()).optional(),
  binaryData: z.record(z.string(), z.string()).optional(),
});

type Doc = z.infer<typeof KeyedSchema>;

const nsOf = (d: Doc) => d.metadata.namespace ?? 'default';

/**
 * A DurableActor written by hand has no metadata.uid; its ids are keyed by one derived
 * from its namespace and name instead, so they stay valid across restarts and on every
 * agent serving the same directory.
 */
export function standaloneActorUid(namespace: string, name: string): string {
  const h = createHash('sha256').update(`edge-isolates/standalone-durable-actor\0${namespace}/${name}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** BindingLookup over the manifests of a directory. */
class ManifestLookup implements BindingLookup {
  constructor(private readonly docs: readonly Doc[], private readonly region: string) {}

  private find(apiVersion: string, kind: string, namespace: string, name: string): Doc | undefined {
    return this.docs.find((d) => d.kind === kind && d.apiVersion === apiVersion && nsOf(d) === namespace && d.metadata.name === name);
  }

  configMap(namespace: string, name: string): Promise<ConfigMapContent | undefined> {
    const cm = this.find('v1', 'ConfigMap', namespace, name);
    return Promise.resolve(cm && { data: { ...cm.data, ...cm.stringData }, binaryData: decodeBinaryData(cm.binaryData) });
  }

  secret(namespace: string, name: string): Promise<Record<string, string> | undefined> {
    const secret = this.find('v1', 'Secret', namespace, name);
    if (!secret) return Promise.resolve(undefined);
    const data = Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
    // As the apiserver does: stringData wins over data.
    return Promise.resolve({ ...data, ...secret.stringData });
  }

  durableActorUid(namespace: string, name: string): Promise<string | undefined> {
    const da = this.find(API_VERSION, 'DurableActor', namespace, name);
    return Promise.resolve(da && (da.metadata.uid ?? standaloneActorUid(namespace, name)));
  }

  aiServices(namespace: string, worker: string, bindings: readonly AiBinding[]): Promise<Record<string, Record<string, AiServiceRef>>> {
    // Task types come from EdgeModels among the manifests (the catalogue); a model none
    // describes is text generation, as before models had tasks.
    const tasks = new Map<string, AiTaskType>();
    for (const d of this.docs) {
      if (d.kind !== 'EdgeModel' || d.apiVersion !== API_VERSION) continue;
      const m = EdgeModelSpecSchema.safeParse((d as { spec?: unknown }).spec);
      if (m.success && !tasks.has(m.data.model)) tasks.set(m.data.model, m.data.task);
    }
    const out: Record<string, Record<string, AiServiceRef>> = {};
    for (const b of bindings) {
      for (const [i, model] of [b.model, ...(b.models ?? []).filter((m) => m !== b.model)].entries()) {
        const key = aiServerKey(b.name, model, i === 0);
        const task = tasks.get(model);
        const ref = modelServerRef(namespace, worker, key, this.region);
        out[key] = { [this.region]: task && task !== 'text-generation' ? { ...ref, task } : ref };
      }
    }
    return Promise.resolve(out);
  }
}

/**
 * Reads EdgeWorker manifests (and the ConfigMaps, Secrets and DurableActors they
 * reference) from the YAML/JSON files of a directory, and reloads when the directory
 * changes. A file that does not parse keeps its last good content, so a bad edit never
 * stops a running worker.
 */
export class DirectorySource implements DesiredStateSource {
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly lastGood = new Map<string, Doc[]>();
  private readonly region: string;
  private readonly aiUrl: AiUrl;

  constructor(private readonly dir: string, private readonly log: Logger, opts: DirectorySourceOptions = {}) {
    this.region = opts.region ?? STANDALONE_REGION;
    this.aiUrl = opts.aiUrl ?? aiUrlFromTemplate();
  }

  async start(onUpdate: (workers: DesiredWorker[]) => void): Promise<void> {
    onUpdate(await this.load());
    this.watcher = watch(this.dir, () => {
      if (this.timer) clearTimeout(this.timer);
      this.timer = setTimeout(() => {
        this.load().then(onUpdate, (err: unknown) => this.log.error('reloading workers failed', { dir: this.dir, error: err }));
      }, 100);
    });
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    if (this.timer) clearTimeout(this.timer);
  }

  private async readDocs(): Promise<Doc[]> {
    const files = (await readdir(this.dir)).filter((f) => /\.(ya?ml|json)$/.test(f)).sort();
    for (const gone of [...this.lastGood.keys()].filter((f) => !files.includes(f))) this.lastGood.delete(gone);
    for (const f of files) {
      try {
        const text = await readFile(join(this.dir, f), 'utf8');
        const docs: Doc[] = [];
        for (const d of parseAllDocuments(text)) {
          if (d.errors.length > 0) throw new Error(d.errors[0]!.message);
          const value: unknown = d.toJSON();
          if (value === null) continue;
          const parsed = KeyedSchema.safeParse(value);
          if (!parsed.success) throw new Error(`not a Kubernetes object: ${z.prettifyError(parsed.error)}`);
          docs.push(parsed.data);
        }
        this.lastGood.set(f, docs);
      } catch (err) {
        this.log.error('manifest file does not parse; keeping its last good version', { file: join(this.dir, f), error: err });
      }
    }
    return [...this.lastGood.values()].flat();
  }

  private async load(): Promise<DesiredWorker[]> {
    const docs = await this.readDocs();
    const lookup = new ManifestLookup(docs, this.region);
    const out: DesiredWorker[] = [];
    for (const doc of docs.filter((d) => d.kind === 'EdgeWorker' && d.apiVersion === API_VERSION)) {
      const ns = nsOf(doc);
      const key = workerRef(ns, doc.metadata.name);
      const parsed = EdgeWorkerSchema.safeParse(doc);
      if (!parsed.success) {
        this.log.error('invalid EdgeWorker manifest; not served', { worker: key, error: z.prettifyError(parsed.error) });
        continue;
      }
      const spec = parsed.data.spec;
      try {
        const { source, env } = await resolveWorker(ns, doc.metadata.name, spec, lookup);
        // A directory of manifests is the admin's own: no EdgePolicy, the built-in defaults.
        const run = builtinRunSettings(spec);
        out.push({
          key, routes: spec.routes ?? [], minWarmIsolates: run.minWarmIsolates,
          ...(spec.placement.shard ? { shard: spec.placement.shard } : {}),
          def: {
            key, name: key, source, limits: run.limits,
            env: isolateWorkerEnv(env, this.region, this.aiUrl),
            digest: workerVersion(sha256Digest(source), spec, env, run),
            ...(spec.compatibilityFlags?.length ? { compatibilityFlags: spec.compatibilityFlags } : {}),
          },
        });
      } catch (err) {
        this.log.error('EdgeWorker cannot be served', { worker: key, dir: this.dir, error: err });
      }
    }
    return out;
  }
}
