import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { parseAllDocuments } from 'yaml';
import { natsClientOptions } from '../common/nats-auth.js';
import { SUBJECTS } from '../common/nats.js';
import { decodeJson, LogLineSchema } from '../common/nats-messages.js';
import { ConditionReasons } from '../common/reasons.js';
import { KubeClient } from '../operator/runtime/kube-client.js';
import {
  actorReadiness, clearDevState, listCrs, TERMINAL_REASONS, workerReadiness, writeDevState,
  type DevState, type DurableActorObj, type EdgeWorkerObj, type Readiness,
} from './cluster-client.js';
import { EDGE_BIN, LocalCluster, portFree, type CatalogueEntry } from './local/cluster.js';
import { kubectl } from './local/kubectl.js';
import { portHolder } from './local/ports.js';
import { retryTransient } from './local/retry.js';
import { mapInlinePositions } from './yaml-source.js';
import { printable } from './logs.js';
import { killAllManaged } from './local/process.js';
import { buildTools } from './local/tools.js';

// `edge dev [DIR]`: the whole system on loopback as real processes (cli/local/cluster.ts:
// control plane, NATS, operator, an agent per simulated region), the manifests of DIR
// applied with kubectl, re-applied when a file changes, everything stopped on Ctrl-C.

export interface DevOptions {
  dir: string;
  /**
   * HTTP port of the first region's agent (default 8787, wrangler dev's); the next regions
   * get the next ports. A taken one is an error naming its holder; 0 picks free ports.
   */
  port?: number;
  regions?: string[];
}

export const DEV_REGIONS = ['eu-west', 'us-east', 'ap-south'];
/** The first region's port: wrangler dev's. */
export const DEV_PORT = 8787;
export const DEV_FIELD_MANAGER = 'edge-dev';
const MANIFEST = /\.(ya?ml|json)$/;

const say = (msg: string) => process.stderr.write(`[edge dev] ${msg}\n`);
const indent = (text: string, by = '  ') => text.replace(/^/gm, by);

/** Which of `ports` are taken, each with what /proc says holds it; empty when all are free. */
export async function takenPorts(ports: number[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of ports) {
    if (await portFree(p)) continue;
    const h = portHolder(p);
    out.push(h ? `port ${p} is in use by pid ${h.pid} (${h.command})` : `port ${p} is in use (by a process this user cannot see: try \`ss -ltnp 'sport = :${p}'\`)`);
  }
  return out;
}

interface ObjRef { apiVersion: string; kind: string; namespace: string; name: string }
const refKey = (o: ObjRef) => `${o.kind}/${o.namespace}/${o.name}`;
const kindGroup = (o: ObjRef) => {
  const slash = o.apiVersion.indexOf('/');
  return `${o.kind.toLowerCase()}${slash < 0 ? '' : `.${o.apiVersion.slice(0, slash)}`}`;
};
const short = (o: ObjRef) => `${o.kind === 'EdgeWorker' ? 'worker' : o.kind === 'DurableActor' ? 'actor' : o.kind.toLowerCase()} ${o.namespace === 'default' ? '' : `${o.namespace}/`}${o.name}`;

/** The objects the manifests of DIR declare, by file; undefined for a file that does not parse. */
function readManifests(dir: string): Map<string, ObjRef[] | undefined> {
  const out = new Map<string, ObjRef[] | undefined>();
  for (const f of readdirSync(dir).filter((n) => MANIFEST.test(n)).sort()) {
    try {
      const refs: ObjRef[] = [];
      for (const doc of parseAllDocuments(readFileSync(join(dir, f), 'utf8'))) {
        if (doc.errors.length > 0) throw doc.errors[0];
        const o = doc.toJSON() as { apiVersion?: string; kind?: string; metadata?: { name?: string; namespace?: string } } | null;
        if (!o?.kind || !o.metadata?.name) continue;
        refs.push({ apiVersion: o.apiVersion ?? 'v1', kind: o.kind, namespace: o.metadata.namespace ?? 'default', name: o.metadata.name });
      }
      out.set(f, refs);
    } catch { out.set(f, undefined); }
  }
  return out;
}

interface Item { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; resourceVersion: string; generation?: number } }

/** The objects of `kubectl ... -o json` output: a List, one object, or nothing. */
function parseItems(stdout: string): Item[] {
  try {
    const out = JSON.parse(stdout || '{}') as Partial<Item> & { items?: Item[] };
    return out.kind === 'List' ? out.items ?? [] : out.metadata ? [out as Item] : [];
  } catch { return []; }
}

/** Runs kubectl apply for each manifest in DIR alone (server dry run): the files kubectl's combined run failed on, each with its error. */
async function problemsByFile(dir: string, kubeconfig: string, files: string[]): Promise<string[]> {
  const out: string[] = [];
  await Promise.all(files.map(async (f) => {
    const r = await kubectl(kubeconfig, ['apply', '--server-side', `--field-manager=${DEV_FIELD_MANAGER}`, '--force-conflicts', '--dry-run=server', '-f', join(dir, f), '-o', 'name']);
    if (r.code !== 0) out.push(`${f}:\n${indent(r.stderr.trimEnd().replace(/ for: "[^"]*"/g, ''))}`);
  }));
  return out.sort();
}

/** Applies DIR with kubectl (server-side) and says what changed; deletes what left the files. */
class Applier {
  private versions = new Map<string, string>();
  private declared = new Map<string, ObjRef>();

  constructor(private readonly dir: string, private readonly kubeconfig: string) {}

  /** The objects as the apiserver has them now (those that exist). */
  private async read(refs: ObjRef[]): Promise<Item[]> {
    const byNs = new Map<string, string[]>();
    for (const o of refs) byNs.set(o.namespace, [...(byNs.get(o.namespace) ?? []), `${kindGroup(o)}/${o.name}`]);
    const out: Item[] = [];
    for (const [ns, names] of byNs) {
      const g = await kubectl(this.kubeconfig, ['get', '-n', ns, '--ignore-not-found', '-o', 'json', ...names]);
      out.push(...parseItems(g.stdout));
    }
    return out;
  }

  /** Returns the EdgeWorkers and DurableActors that changed (created or their spec updated). */
  async apply(initial: boolean): Promise<ObjRef[]> {
    const files = readManifests(this.dir);
    // kubectl refuses an empty directory with "no objects passed to apply": say what to do instead.
    const r = files.size === 0
      ? { code: 0, stdout: '', stderr: '' }
      : await kubectl(this.kubeconfig, ['apply', '--server-side', `--field-manager=${DEV_FIELD_MANAGER}`, '--force-conflicts', '-f', this.dir, '-o', 'json']);
    if (files.size === 0) say(`no manifests in ${this.dir} (*.yaml, *.yml, *.json): add one, e.g. \`cp examples/hello.yaml ${relative(process.cwd(), this.dir) || '.'}/\`, and it is applied when saved`);
    let items = parseItems(r.stdout);
    if (r.code !== 0) {
      // kubectl names the object, not the file: ask again file by file to say which.
      const byFile = await problemsByFile(this.dir, this.kubeconfig, [...files.keys()]);
      say(`kubectl apply found problems (fix the file and save it again):\n${indent(byFile.length > 0 ? byFile.join('\n') : r.stderr.trimEnd())}`);
      // kubectl prints nothing when any object failed: read what the others are now.
      items = await this.read([...files.values()].flatMap((refs) => refs ?? []));
    }
    const changed: ObjRef[] = [];
    for (const it of items) {
      const ref = { apiVersion: it.apiVersion, kind: it.kind, namespace: it.metadata.namespace ?? 'default', name: it.metadata.name };
      const k = refKey(ref);
      // generation moves only with the spec (status writes move resourceVersion too).
      const version = it.metadata.generation !== undefined ? `g${it.metadata.generation}` : `rv${it.metadata.resourceVersion}`;
      const before = this.versions.get(k);
      this.versions.set(k, version);
      if (before === version) continue;
      changed.push(ref);
      if (!initial) say(`${before === undefined ? 'created' : 'updated'} ${short(ref)}${it.metadata.generation ? ` (generation ${it.metadata.generation})` : ''}`);
    }
    // Objects whose manifest was removed from DIR are deleted, unless a file does not parse
    // (a half-saved edit must not delete anything).
    if (![...files.values()].includes(undefined)) {
      const now = new Map<string, ObjRef>();
      for (const refs of files.values()) for (const o of refs ?? []) now.set(refKey(o), o);
      for (const [k, o] of this.declared) {
        if (now.has(k)) continue;
        const d = await kubectl(this.kubeconfig, ['delete', '--ignore-not-found', '--wait=false', '-n', o.namespace, `${kindGroup(o)}/${o.name}`]);
        say(d.code === 0 ? `deleted ${short(o)} (its manifest is gone from ${this.dir})` : `deleting ${short(o)} failed: ${d.stderr.trim()}`);
        this.versions.delete(k);
      }
      this.declared = now;
    } else if (this.declared.size === 0) {
      for (const refs of files.values()) for (const o of refs ?? []) this.declared.set(refKey(o), o);
    }
    return changed.filter((o) => o.kind === 'EdgeWorker' || o.kind === 'DurableActor');
  }
}

interface Snapshot { workers: EdgeWorkerObj[]; actors: DurableActorObj[] }

async function snapshot(kube: KubeClient): Promise<Snapshot> {
  const [workers, actors] = await Promise.all([listCrs<EdgeWorkerObj>(kube, 'edgeworkers'), listCrs<DurableActorObj>(kube, 'durableactors')]);
  return { workers, actors };
}

function readinessOf(s: Snapshot, o: ObjRef): Readiness | undefined {
  const match = (m: { name: string; namespace: string }) => m.name === o.name && m.namespace === o.namespace;
  if (o.kind === 'EdgeWorker') { const w = s.workers.find((x) => match(x.metadata)); return w && workerReadiness(w); }
  const d = s.actors.find((x) => match(x.metadata));
  return d && actorReadiness(d);
}

/**
 * Waits until each object is Ready or refused for good, printing one line per object as
 * it settles (and, every 10 s, what is still pending). Never throws: dev keeps running.
 */
async function settle(kube: KubeClient, objs: ObjRef[], timeoutMs: number, abort: () => boolean, dir?: string): Promise<void> {
  const pending = new Map(objs.map((o) => [refKey(o), o]));
  const t0 = Date.now();
  let lastNote = t0;
  const refusedSince = new Map<string, number>();
  while (pending.size > 0) {
    let s: Snapshot;
    try { s = await retryTransient(() => snapshot(kube)); } catch (err) { say(`reading status failed: ${(err as Error).message}`); return; }
    for (const [k, o] of pending) {
      const r = readinessOf(s, o);
      if (!r?.current) continue;
      const name = short(o).padEnd(18);
      if (r.ready) {
        say(`  ready    ${name} ${r.where}`);
        pending.delete(k);
      } else if (TERMINAL_REASONS.has(r.reason)) {
        // Objects applied together refer to each other (a worker binds an actor class that
        // names the worker): give the operator a moment before calling it final.
        const since = refusedSince.get(k) ?? Date.now();
        refusedSince.set(k, since);
        if (r.reason === ConditionReasons.BundleInvalid || Date.now() - since > 8000) {
          // An inline worker's position is in a made-up file: say it in the YAML, with the lines around it.
          const m = dir ? mapInlinePositions(r.message, dir) : { text: r.message };
          say(`  refused  ${name} ${r.reason}: ${m.text}${m.frame ? `\n${indent(m.frame, '             ')}` : ''}`);
          pending.delete(k);
        }
      } else refusedSince.delete(k);
    }
    if (pending.size === 0 || abort()) return;
    if (Date.now() - t0 > timeoutMs) {
      for (const o of pending.values()) { const r = readinessOf(s, o); say(`  not ready ${short(o)}: ${r ? `${r.reason} ${r.message}` : 'no status'}`); }
      return;
    }
    if (Date.now() - lastNote > 10_000) {
      lastNote = Date.now();
      say(`  waiting for ${[...pending.values()].map((o) => short(o)).join(', ')}...`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function routeLines(s: Snapshot, cluster: LocalCluster): string[] {
  const rows: [string, string, string][] = [];
  const workers = [...s.workers].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  for (const w of workers) {
    const placed = new Set((w.status?.regions ?? []).map((r) => r.name));
    const agents = cluster.agents.filter((a) => placed.has(a.region));
    const port = agents[0]?.port ?? cluster.agents[0]!.port;
    const where = agents.length > 0
      ? agents.map((a) => `${a.region} :${a.port}`).join(', ') + (workerReadiness(w).ready ? '' : ' (not ready: see edge status)')
      : 'not placed (see edge status)';
    (w.spec.routes ?? []).forEach((r, i) => {
      const path = r.pathPrefix ?? '/';
      const host = r.host.replace(/^\*\./, 'any.');
      const url = host.endsWith('.localhost') ? `http://${host}:${port}${path}` : `curl -H 'Host: ${host}' http://127.0.0.1:${port}${path}`;
      rows.push([i === 0 ? w.metadata.name : '', url, i === 0 ? where : '']);
    });
  }
  const w0 = Math.max(0, ...rows.map((r) => r[0].length));
  const w1 = Math.max(0, ...rows.map((r) => r[1].length));
  return rows.map(([n, u, where]) => `  ${n.padEnd(w0)}  ${u.padEnd(w1)}  ${where}`.trimEnd());
}

function banner(cluster: LocalCluster, s: Snapshot, dir: string, startedMs: number, portsPicked: boolean): string {
  const cp = cluster.cp;
  const edgeCmd = relative(process.cwd(), EDGE_BIN).startsWith('..') ? EDGE_BIN : relative(process.cwd(), EDGE_BIN);
  const rw = Math.max('operator'.length, ...cluster.agents.map((a) => a.region.length));
  const ports = cluster.agents.map((a) => a.port);
  return [
    '',
    `edge dev: ${cluster.agents.length} regions, ${cluster.processes.length} processes, ready in ${(startedMs / 1000).toFixed(1)} s`,
    '',
    ...(portsPicked ? [
      `*** PORTS: ${cluster.agents.map((a) => `${a.region} ${a.port}`).join(', ')} (not ${DEV_PORT}-${DEV_PORT + ports.length - 1}): use these in place of ${DEV_PORT}, ${DEV_PORT + 1}, ... in the README's commands ***`,
      '',
    ] : []),
    `workers in ${relative(process.cwd(), dir).startsWith('..') ? dir : relative(process.cwd(), dir) || '.'} (save a file there and it is re-applied), and the regions they run in:`,
    ...routeLines(s, cluster),
    '',
    'regions (each agent serves the workers placed in its region on its port):',
    ...cluster.agents.map((a) => `  ${a.region.padEnd(rw)}  ${a.url}   metrics http://127.0.0.1:${a.admin}/metrics`),
    `  ${'operator'.padEnd(rw)}  metrics http://127.0.0.1:${cluster.operators[0]!.admin}/metrics`,
    `  env.AI calls go to a stand-in model server per region: it echoes the prompt (no GPU here)`,
    '',
    `kubeconfig      ${cp.kubeconfigPath}`,
    `NATS            ${cp.natsUrl} (a user per role, passwords in ${cp.dir}/nats-*.password)`,
    `kube-apiserver  ${cp.apiserverUrl}`,
    `logs            ${cp.dir}/*.log`,
    '',
    'try:',
    `  export KUBECONFIG=${cp.kubeconfigPath}`,
    '  kubectl get ew,da',
    `  ${edgeCmd} status`,
    `  ${edgeCmd} logs ${s.workers.some((w) => w.metadata.name === 'chat') ? 'chat' : s.workers[0]?.metadata.name ?? 'NAME'} -f --requests`,
    `  ${edgeCmd} deploy my-worker.js`,
    '',
    'Ctrl-C stops everything.',
    '',
  ].join('\n');
}

/**
 * Prints workers' console output and uncaught exceptions here as they happen (what
 * `edge logs -f` shows for one worker), an inline worker's positions in its YAML file.
 * Best effort: without it `edge logs` still works.
 */
async function followWorkerOutput(cluster: LocalCluster, dir: string): Promise<NatsConnection | undefined> {
  let conn: NatsConnection;
  try {
    conn = await connect({ ...natsClientOptions({ role: 'logs', credentials: cluster.cp.natsCredentials.logs }), servers: cluster.cp.natsUrl, name: 'edge dev' });
  } catch (err) {
    say(`not showing workers' output here (NATS: ${(err as Error).message}); edge logs NAME -f shows it`);
    return undefined;
  }
  // edge.logs.<namespace>.<name>: console lines and exceptions (requests are one token longer).
  const sub = conn.subscribe(SUBJECTS.logs('*', '*'));
  void (async () => {
    for await (const m of sub) {
      let l;
      try { l = decodeJson(LogLineSchema, m.data, 'log line'); } catch { continue; }
      const who = `${l.worker.startsWith('default/') ? l.worker.slice('default/'.length) : l.worker} ${l.region}`;
      if (l.kind === 'exception') {
        const mapped = mapInlinePositions(`${l.message}${l.stack ? `\n${l.stack}` : ''}`, dir);
        process.stderr.write(printable(`[${who}] Uncaught ${indent(mapped.text, '  ').trimStart()}\n${mapped.frame ? `${indent(mapped.frame, '  ')}\n` : ''}  (ray ${l.ray ?? '?'}; edge logs ${l.worker.split('/')[1]} shows it again)`) + '\n');
      } else {
        process.stderr.write(`${printable(`[${who}] ${l.level === 'log' ? '' : `${l.level}: `}${l.message}`)}\n`);
      }
    }
  })();
  return conn;
}

function hasKubectl(): boolean {
  return spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore' }).status === 0;
}

/** The model `edge dev`'s catalogue offers: the one examples/ai.yaml names. */
export const DEV_MODEL = 'llama-3.1-8b-instruct';

/** `edge dev`'s catalogue: DEV_MODEL, and Workers AI ids of each task type the stand-ins answer. */
export const DEV_CATALOGUE: CatalogueEntry[] = [
  { model: DEV_MODEL },
  { model: '@cf/meta/llama-3.1-8b-instruct' },
  { model: '@cf/baai/bge-base-en-v1.5', task: 'text-embeddings', gpus: 0 },
  { model: '@cf/baai/bge-small-en-v1.5', task: 'text-embeddings', gpus: 0 },
  { model: '@cf/baai/bge-large-en-v1.5', task: 'text-embeddings', gpus: 0 },
  // The image never runs under edge dev (the stand-in answers); a cluster names a real server.
  { model: '@cf/stabilityai/stable-diffusion-xl-base-1.0', task: 'text-to-image', image: 'edge-isolates.dev/stand-in-image-server:dev' },
];

export async function runDev(opts: DevOptions): Promise<number> {
  const t0 = performance.now();
  const dir = resolve(opts.dir);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) { say(`no such directory: ${dir}`); return 2; }
  if (!hasKubectl()) { say('kubectl is not on PATH: edge dev applies the manifests with it'); return 1; }
  const regions = opts.regions ?? DEV_REGIONS;
  const first = opts.port ?? DEV_PORT;
  // A taken port is an error naming its holder: swapped silently, the README's first curl
  // would reach whatever holds it. --port 0 asks for free ports instead.
  const wanted = first === 0 ? [] : regions.map((_, i) => first + i);
  const taken = await takenPorts(wanted);
  if (taken.length > 0) {
    say(`cannot serve ${regions.length === 1 ? 'the region' : `the ${regions.length} regions`} on ${wanted.length === 1 ? `port ${wanted[0]}` : `ports ${wanted[0]}-${wanted.at(-1)}`}:\n${indent(taken.join('\n'))}\n`
      + `stop that process, give another first port (--port N: the regions take N${regions.length > 1 ? `..N+${regions.length - 1}` : ''}), or --port 0 for free ports (printed when ready)`);
    return 1;
  }

  let cluster: LocalCluster | undefined;
  let watcher: FSWatcher | undefined;
  let nc: NatsConnection | undefined;
  let stopping: Promise<void> | undefined;
  let starting = true;
  const stop = () => {
    stopping ??= (async () => {
      say('stopping...');
      watcher?.close();
      await nc?.close().catch(() => {});
      clearDevState();
      await cluster?.stop();
      say('stopped; nothing left running');
    })();
    return stopping;
  };
  let signalled = false;
  let release: () => void = () => {};
  const stopped = new Promise<void>((r) => { release = r; });
  const onSignal = (sig: string) => {
    if (signalled) {
      say(`${sig} again: killing everything now`);
      killAllManaged();
      process.exit(130);
    }
    signalled = true;
    if (starting) say(`${sig}: stopping once the current start-up step ends (again to kill everything now)`);
    release();
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));

  try {
    await buildTools(['etcd', 'kube-apiserver', 'nats-server'], say);
    if (signalled) return 0;
    cluster = await LocalCluster.start({
      regions, ports: wanted, fieldManager: DEV_FIELD_MANAGER, progress: say,
      operator: { identity: 'edge-dev' },
      // Only edge dev's agents answer an uncaught exception with its stack (never a cluster's).
      agentArgs: ['--dev-error-pages'],
      models: { label: (r) => `stand-in model, ${r}`, tokenDelayMs: 30, standInsReady: true },
      // The catalogue (EdgeModels) offers the model examples/ai.yaml binds and one Workers AI
      // model of each task type; the stand-in servers answer for any model and every task.
      catalogue: DEV_CATALOGUE,
    });
    if (signalled) { await stop(); return 0; }
    const kube = new KubeClient(cluster.kubeConfig);
    const applier = new Applier(dir, cluster.cp.kubeconfigPath);
    say(`applying the manifests in ${dir}...`);
    const applied = await applier.apply(true);
    await settle(kube, applied, 90_000, () => signalled, dir);
    if (signalled) { await stop(); return 0; }
    const moved = wanted.flatMap((p, i) => (cluster!.agents[i] && cluster!.agents[i].port !== p ? [`${cluster!.agents[i].region} :${p} -> :${cluster!.agents[i].port}`] : []));
    if (moved.length > 0) say(`WARNING: ports taken while starting: ${moved.join(', ')}`);
    nc = await followWorkerOutput(cluster, dir);

    const cp = cluster.cp;
    const state: DevState = {
      pid: process.pid, startedAt: new Date().toISOString(), dir, kubeconfig: cp.kubeconfigPath, natsUrl: cp.natsUrl,
      natsUser: cp.natsCredentials.logs.user, natsPasswordFile: cp.natsCredentials.logs.passwordFile, apiserverUrl: cp.apiserverUrl,
      agents: cluster.agents.map((a) => ({ region: a.region, node: a.node, url: a.url, port: a.port, metrics: `http://127.0.0.1:${a.admin}/metrics` })),
      operatorMetrics: `http://127.0.0.1:${cluster.operators[0]!.admin}/metrics`,
    };
    writeDevState(state);
    process.stdout.write(banner(cluster, await retryTransient(() => snapshot(kube)), dir, performance.now() - t0, first === 0 || moved.length > 0));
    starting = false;

    // Hot reload: re-apply on every change (debounced), one apply at a time.
    let timer: NodeJS.Timeout | undefined;
    let running: Promise<void> = Promise.resolve();
    const reapply = () => {
      running = running.then(async () => {
        if (stopping) return;
        const changed = await applier.apply(false);
        if (changed.length > 0 && !stopping) await settle(kube, changed, 60_000, () => stopping !== undefined, dir);
      }).catch((err: unknown) => { say(`re-applying failed: ${(err as Error).message}`); });
    };
    watcher = watch(dir, (_event, file) => {
      if (file && !MANIFEST.test(String(file))) return;
      clearTimeout(timer);
      timer = setTimeout(reapply, 200);
    });
  } catch (err) {
    say(`failed: ${err instanceof Error ? err.message : String(err)}`);
    await stop();
    return 1;
  }
  await stopped;
  await stop();
  return 0;
}
