import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { API_VERSION, EdgeWorkerSchema, type EdgeWorkerSpec } from '../../common/api/index.js';
import type { Logger } from '../../common/log.js';
import type { WorkerDefinition } from '../isolate/worker-isolate.js';
import type { DesiredStateSource, DesiredWorker } from '../serving/desired.js';

// The directory-backed DesiredStateSource (`edge agent --workers DIR`); the operator's
// NATS-backed one (nats-source.ts) plugs in behind the same interface (serving/desired.ts).

const sha256 = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;

/** Identity of a worker version: whatever changes what its isolates run. */
export function versionDigest(source: string, spec: EdgeWorkerSpec, env: WorkerDefinition['env']): string {
  return sha256(JSON.stringify({ source, limits: spec.limits, env, compatibilityDate: spec.compatibilityDate ?? null, minWarm: spec.placement.minWarmIsolates }));
}

const KeyedSchema = z.looseObject({
  apiVersion: z.string(),
  kind: z.string(),
  metadata: z.looseObject({ name: z.string(), namespace: z.string().optional() }),
  data: z.record(z.string(), z.string()).optional(),
  stringData: z.record(z.string(), z.string()).optional(),
});

type Doc = z.infer<typeof KeyedSchema>;

/**
 * Reads EdgeWorker manifests (and the ConfigMaps and Secrets they reference) from the
 * YAML/JSON files of a directory, and reloads when the directory changes. A file that
 * does not parse keeps its last good content, so a bad edit never stops a running worker.
 */
export class DirectorySource implements DesiredStateSource {
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly lastGood = new Map<string, Doc[]>();

  constructor(private readonly dir: string, private readonly log: Logger) {}

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
    const nsOf = (d: Doc) => d.metadata.namespace ?? 'default';
    const lookup = (kind: string, ns: string, name: string) => docs.find((d) => d.kind === kind && d.apiVersion === 'v1' && nsOf(d) === ns && d.metadata.name === name);
    const dataOf = (d: Doc, key: string): string | undefined => {
      if (d.stringData?.[key] !== undefined) return d.stringData[key];
      const raw = d.data?.[key];
      if (raw === undefined) return undefined;
      return d.kind === 'Secret' ? Buffer.from(raw, 'base64').toString('utf8') : raw;
    };
    const out: DesiredWorker[] = [];
    for (const doc of docs.filter((d) => d.kind === 'EdgeWorker' && d.apiVersion === API_VERSION)) {
      const ns = nsOf(doc);
      const key = `${ns}/${doc.metadata.name}`;
      const parsed = EdgeWorkerSchema.safeParse(doc);
      if (!parsed.success) {
        this.log.error('invalid EdgeWorker manifest; not served', { worker: key, error: z.prettifyError(parsed.error) });
        continue;
      }
      const spec = parsed.data.spec;
      try {
        let source = spec.source.inline;
        if (source === undefined && spec.source.configMapRef) {
          const { name, key: dataKey } = spec.source.configMapRef;
          const cm = lookup('ConfigMap', ns, name);
          source = cm ? dataOf(cm, dataKey) : undefined;
          if (source === undefined) throw new Error(`spec.source.configMapRef: ConfigMap ${ns}/${name} key ${dataKey} not found in ${this.dir}`);
        }
        if (source === undefined) throw new Error('spec.source has neither inline nor configMapRef');
        const text: Record<string, string> = { ...spec.bindings?.vars };
        for (const s of spec.bindings?.secrets ?? []) {
          const secret = lookup('Secret', ns, s.secretKeyRef.name);
          const value = secret ? dataOf(secret, s.secretKeyRef.key) : undefined;
          if (value === undefined) throw new Error(`spec.bindings.secrets ${s.name}: Secret ${ns}/${s.secretKeyRef.name} key ${s.secretKeyRef.key} not found in ${this.dir}`);
          text[s.name] = value;
        }
        const env = { text };
        out.push({
          key, routes: spec.routes ?? [], minWarmIsolates: spec.placement.minWarmIsolates,
          def: { key, name: key, source, limits: spec.limits, env, digest: versionDigest(source, spec, env) },
        });
      } catch (err) {
        this.log.error('EdgeWorker cannot be served', { worker: key, error: err });
      }
    }
    return out;
  }
}
