import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse as parseJsonc, printParseErrorCode, type ParseError } from 'jsonc-parser';
import { parse as parseToml } from 'smol-toml';
import {
  API_VERSION, DNS_LABEL_PATTERN, EdgeWorkerSpecSchema, JS_IDENTIFIER_PATTERN, type EdgeWorkerSpec,
} from '../common/api/index.js';
import { EdgeError } from '../common/errors.js';
import type { AssetsConfig } from './assets.js';
import { MODULE_RULE_TYPES, type ModuleRule } from './module-rules.js';

// A wrangler project (wrangler.toml, wrangler.json or wrangler.jsonc) as what `edge deploy`
// applies: the EdgeWorker spec, the DurableActors its migrations create, the module rules
// and assets for the bundler, and a note for every key it cannot honour (never silently).

export const WRANGLER_FILES = ['wrangler.json', 'wrangler.jsonc', 'wrangler.toml'] as const;

export class WranglerConfigError extends EdgeError {}

type Obj = Record<string, unknown>;

export interface DurableActorManifest {
  apiVersion: typeof API_VERSION;
  kind: 'DurableActor';
  metadata: { name: string; namespace?: string };
  spec: { workerRef: { name: string }; className: string; storage: { backend: 'kv' | 'sqlite' } };
}

export interface WranglerProject {
  /** The file read. */
  file: string;
  /** Where relative paths (main, rules, assets) start. */
  root: string;
  name: string;
  /** Absolute path of the entry module; undefined for an assets-only project. */
  main?: string;
  /** The EdgeWorker spec, less its source (the bundle). */
  spec: Omit<EdgeWorkerSpec, 'source' | 'placement'> & { placement?: EdgeWorkerSpec['placement'] };
  actors: DurableActorManifest[];
  rules: ModuleRule[];
  assets?: AssetsConfig;
  minify?: boolean;
  /** no_bundle: the entry and the modules the rules find are uploaded as they are (a module map). */
  noBundle?: boolean;
  /** find_additional_modules (default: no_bundle): files the rules match become modules of their own. */
  findAdditionalModules?: boolean;
  /** base_dir, absolute (default: the entry's directory): the root module names are relative to. */
  baseDir?: string;
  define?: Record<string, string>;
  alias?: Record<string, string>;
  /** One line per key left out or changed, as printed by `edge deploy`. */
  notes: string[];
  /** AI bindings that need a model named on the command line (`--ai BINDING=MODEL`). */
  aiBindingsWithoutModel: string[];
}

/** The wrangler config file of `dir`, if any (wrangler prefers json, jsonc, then toml). */
export function findWranglerConfig(dir: string): string | undefined {
  for (const f of WRANGLER_FILES) if (existsSync(join(dir, f))) return join(dir, f);
  return undefined;
}

export function readWranglerFile(file: string): Obj {
  const text = readFileSync(file, 'utf8');
  if (file.endsWith('.toml')) {
    try { return parseToml(text) as Obj; } catch (err) { throw new WranglerConfigError(`${file}: ${(err as Error).message}`, { cause: err }); }
  }
  const errors: ParseError[] = [];
  const v = parseJsonc(text, errors, { allowTrailingComma: true }) as unknown;
  if (errors.length) {
    const e = errors[0]!;
    const line = text.slice(0, e.offset).split('\n').length;
    throw new WranglerConfigError(`${file}:${line}: ${printParseErrorCode(e.error)}`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new WranglerConfigError(`${file}: not an object`);
  return v as Obj;
}

/** Keys that name a binding kind or platform feature edge-isolates has no counterpart for. */
const UNSUPPORTED: Record<string, string> = {
  kv_namespaces: 'no KV binding kind',
  r2_buckets: 'no R2 binding kind',
  d1_databases: 'no D1 binding kind',
  queues: 'no Queues binding kind',
  triggers: 'no cron triggers',
  hyperdrive: 'no Hyperdrive binding kind',
  vectorize: 'no Vectorize binding kind',
  analytics_engine_datasets: 'no Analytics Engine binding kind',
  browser: 'no Browser Rendering binding kind',
  dispatch_namespaces: 'no Workers for Platforms dispatch namespaces',
  mtls_certificates: 'no mTLS certificate binding kind',
  send_email: 'no email binding kind',
  tail_consumers: 'no tail workers',
  workflows: 'no Workflows binding kind',
  version_metadata: 'no version metadata binding kind',
  pipelines: 'no Pipelines binding kind',
  images: 'no Images binding kind',
  secrets_store_secrets: 'no Secrets Store binding kind (use `edge secret put`)',
  unsafe: 'no unsafe bindings',
  site: 'no Workers Sites (use assets)',
  build: 'no custom build step (run it before edge deploy)',
  node_compat: 'the legacy node_compat polyfills are not provided (use compatibility_flags = ["nodejs_compat"])',
  placement: 'no Smart Placement (spec.placement.regions chooses regions: --regions)',
  wasm_modules: 'no service-worker wasm_modules (import the .wasm from an ES module)',
  text_blobs: 'no service-worker text_blobs (import the file from an ES module)',
  data_blobs: 'no service-worker data_blobs (import the file from an ES module)',
  logpush: 'no Logpush (use edge logs)',
  tsconfig: 'esbuild reads the tsconfig.json of the project itself',
  jsx_factory: 'the JSX options are not passed to esbuild',
  jsx_fragment: 'the JSX options are not passed to esbuild',
  usage_model: 'no usage models',
  containers: 'no Containers',
  cloudchamber: 'no Containers',
};
/** Keys with no meaning here: listed, then ignored. */
const NO_EFFECT = new Set(['$schema', 'account_id', 'workers_dev', 'preview_urls', 'observability', 'upload_source_maps', 'keep_vars', 'send_metrics', 'dev', 'legacy_env', 'first_deploy', 'zone_id', 'keep_names', 'env']);
/** Keys this file honours. */
const HONOURED = new Set(['name', 'main', 'compatibility_date', 'compatibility_flags', 'vars', 'durable_objects', 'migrations', 'ai', 'services', 'worker_loaders', 'rules', 'limits', 'route', 'routes', 'assets', 'minify', 'define', 'alias', 'no_bundle', 'find_additional_modules', 'base_dir', 'preserve_file_names']);
/** Keys an [env.NAME] inherits from the top level (wrangler's inheritable keys); the others it must repeat. */
const INHERITABLE = new Set(['main', 'compatibility_date', 'compatibility_flags', 'rules', 'limits', 'route', 'routes', 'assets', 'minify', 'define', 'alias', 'migrations', 'workers_dev', 'preview_urls', 'build', 'placement', 'triggers', 'usage_model', 'observability', 'no_bundle', 'find_additional_modules', 'base_dir', 'tsconfig', 'jsx_factory', 'jsx_fragment', 'logpush', 'upload_source_maps', 'keep_vars']);

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const ident = new RegExp(JS_IDENTIFIER_PATTERN);
const dnsLabel = new RegExp(DNS_LABEL_PATTERN);

/** The DurableActor a class of worker `worker` is stored as: `<worker>-<class>` as a DNS label. */
export function actorName(worker: string, className: string): string {
  const cls = className.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase().replace(/[^a-z0-9-]+/g, '-');
  return `${worker}-${cls}`.replace(/-+/g, '-').slice(0, 63).replace(/^-+|-+$/g, '');
}

/** A route pattern (`example.com/*`, `example.com/api/*`, `*.example.com/*`) as host and path prefix. */
export function routeFromPattern(pattern: string): { host: string; pathPrefix?: string } {
  const p = pattern.replace(/^https?:\/\//, '');
  const slash = p.indexOf('/');
  let host = (slash < 0 ? p : p.slice(0, slash)).toLowerCase().replace(/:\d+$/, '');
  let path = slash < 0 ? '/' : p.slice(slash);
  if (host.startsWith('*') && !host.startsWith('*.')) {
    // `*example.com` matches example.com and its subdomains; a route per form.
    host = `*.${host.slice(1)}`;
  }
  if (path.endsWith('*')) path = path.slice(0, -1);
  if (path.includes('*')) throw new WranglerConfigError(`routes: "${pattern}": a "*" is honoured only at the end of the path`);
  return path === '/' ? { host } : { host, pathPrefix: path };
}

/**
 * The project of the wrangler config `file` for environment `envName` (undefined: the top
 * level). Throws WranglerConfigError for what cannot be deployed at all (no name, no main
 * and no assets, a Durable Object class no migration creates, a malformed key).
 */
export function loadWranglerProject(file: string, envName?: string): WranglerProject {
  const top = readWranglerFile(file);
  const root = resolve(file, '..');
  const notes: string[] = [];
  const base = file.slice(root.length + 1);
  const note = (key: string, msg: string) => notes.push(`${base}: ${key} ${msg}`);

  let cfg: Obj = top;
  let name = typeof top.name === 'string' ? top.name : undefined;
  if (envName !== undefined) {
    const envs = isObj(top.env) ? top.env : {};
    const env = envs[envName];
    if (!isObj(env)) throw new WranglerConfigError(`${base}: no [env.${envName}] (environments: ${Object.keys(envs).join(', ') || 'none'})`);
    cfg = {};
    for (const [k, v] of Object.entries(top)) if (INHERITABLE.has(k) || NO_EFFECT.has(k)) cfg[k] = v;
    Object.assign(cfg, env);
    // wrangler names an environment's worker <name>-<env> unless the environment names it.
    name = typeof env.name === 'string' ? env.name : name && `${name}-${envName}`;
    const notRepeated = Object.keys(top).filter((k) => !INHERITABLE.has(k) && !NO_EFFECT.has(k) && k !== 'name' && !(k in env));
    if (notRepeated.length) note(`[env.${envName}]`, `does not repeat ${notRepeated.join(', ')}: as in wrangler, those top-level keys do not apply to an environment`);
  }
  if (!name) throw new WranglerConfigError(`${base}: name is required`);
  if (!dnsLabel.test(name) || name.length > 63) throw new WranglerConfigError(`${base}: name "${name}" must be a DNS label (lower case letters, digits, '-')`);

  for (const k of Object.keys(cfg)) {
    if (HONOURED.has(k)) continue;
    if (k in UNSUPPORTED) note(k, `is not supported by edge-isolates (${UNSUPPORTED[k]}); it was left out`);
    else if (NO_EFFECT.has(k)) { if (k !== 'env' && k !== '$schema') note(k, 'has no meaning on edge-isolates; ignored'); }
    else note(k, 'is not a key edge-isolates knows; it was left out');
  }

  const str = (k: string): string | undefined => {
    const v = cfg[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw new WranglerConfigError(`${base}: ${k} must be a string`);
    return v;
  };
  const list = (k: string, v: unknown): Obj[] => {
    if (v === undefined) return [];
    if (!Array.isArray(v) || !v.every(isObj)) throw new WranglerConfigError(`${base}: ${k} must be a list of tables`);
    return v;
  };

  const mainRel = str('main');
  const main = mainRel === undefined ? undefined : resolve(root, mainRel);
  if (main && !existsSync(main)) throw new WranglerConfigError(`${base}: main ${mainRel} does not exist`);

  const spec: WranglerProject['spec'] = {};
  const date = str('compatibility_date');
  if (date !== undefined) spec.compatibilityDate = date;
  const flags = cfg.compatibility_flags;
  if (flags !== undefined) {
    if (!Array.isArray(flags) || !flags.every((f) => typeof f === 'string')) throw new WranglerConfigError(`${base}: compatibility_flags must be a list of strings`);
    const accepted = compatibilityFlagsField(flags, (f, why) => note('compatibility_flags', `"${f}" ${why}; it was left out`));
    if (accepted.length) (spec as Obj).compatibilityFlags = accepted;
  }

  // vars: strings pass as they are; anything else as its JSON text, since env vars are strings here.
  if (cfg.vars !== undefined) {
    if (!isObj(cfg.vars)) throw new WranglerConfigError(`${base}: vars must be a table`);
    const vars: Record<string, string> = {};
    for (const [k, v] of Object.entries(cfg.vars)) {
      if (!ident.test(k)) throw new WranglerConfigError(`${base}: vars.${k} is not a JavaScript identifier (it becomes env.${k})`);
      if (typeof v === 'string') vars[k] = v;
      else { vars[k] = JSON.stringify(v); note(`vars.${k}`, 'is not a string: edge-isolates vars are strings, so env.' + k + ' is its JSON text'); }
    }
    if (Object.keys(vars).length) spec.bindings = { ...spec.bindings, vars };
  }

  // Durable Objects: each class a migration creates becomes a DurableActor of this worker.
  const migrations = list('migrations', cfg.migrations);
  const classes = new Map<string, { backend: 'kv' | 'sqlite'; actor: string }>();
  const names = (m: Obj, k: string): string[] => {
    const v = m[k];
    if (v === undefined) return [];
    if (!Array.isArray(v)) throw new WranglerConfigError(`${base}: migrations ${String(m.tag ?? '')} ${k} must be a list`);
    return v as string[];
  };
  for (const m of migrations) {
    for (const c of names(m, 'new_classes')) classes.set(c, { backend: 'kv', actor: actorName(name, c) });
    for (const c of names(m, 'new_sqlite_classes')) classes.set(c, { backend: 'sqlite', actor: actorName(name, c) });
    for (const r of names(m, 'renamed_classes') as unknown as Obj[]) {
      const from = String(r.from), to = String(r.to);
      const old = classes.get(from);
      if (!old) throw new WranglerConfigError(`${base}: migrations renamed_classes: no earlier migration creates ${from}`);
      // The DurableActor keeps its name (its storage is keyed by it); only the class changes.
      classes.delete(from);
      classes.set(to, old);
      note('migrations', `renamed_classes ${from} -> ${to}: DurableActor ${old.actor} keeps its name and storage and now runs class ${to}`);
    }
    for (const c of names(m, 'deleted_classes')) {
      const old = classes.get(c);
      classes.delete(c);
      if (old) note('migrations', `deleted_classes ${c}: DurableActor ${old.actor} and its storage were NOT deleted; delete them with \`kubectl delete durableactor ${old.actor}\``);
    }
    if (m.transferred_classes !== undefined) note('migrations', 'transferred_classes is not supported by edge-isolates (a DurableActor belongs to one worker); it was left out');
  }
  const actors: DurableActorManifest[] = [...classes].map(([className, c]) => ({
    apiVersion: API_VERSION, kind: 'DurableActor', metadata: { name: c.actor },
    spec: { workerRef: { name }, className, storage: { backend: c.backend } },
  }));
  const doBindings = isObj(cfg.durable_objects) ? list('durable_objects.bindings', cfg.durable_objects.bindings) : [];
  if (doBindings.length) {
    spec.bindings = {
      ...spec.bindings,
      actors: doBindings.map((b) => {
        const binding = String(b.name), cls = String(b.class_name);
        if (!ident.test(binding)) throw new WranglerConfigError(`${base}: durable_objects.bindings: "${binding}" is not a JavaScript identifier`);
        const script = typeof b.script_name === 'string' ? b.script_name : undefined;
        if (script && script !== name) {
          // Another worker's class: that worker's deploy created its DurableActor.
          return { name: binding, actor: actorName(script, cls) };
        }
        const c = classes.get(cls);
        if (!c) throw new WranglerConfigError(`${base}: durable_objects.bindings ${binding}: no migration creates class ${cls} (add [[migrations]] with new_sqlite_classes = ["${cls}"])`);
        return { name: binding, actor: c.actor };
      }),
    };
  }

  if (cfg.ai !== undefined) {
    if (!isObj(cfg.ai) || typeof cfg.ai.binding !== 'string') throw new WranglerConfigError(`${base}: ai must be a table with binding = "NAME"`);
    // Workers AI names the model at each run(); here a binding serves one catalogue model.
    if (typeof cfg.ai.model === 'string') spec.bindings = { ...spec.bindings, ai: [{ name: cfg.ai.binding, model: cfg.ai.model, replicasPerRegion: 1 }] };
  }
  const aiBindingsWithoutModel = isObj(cfg.ai) && typeof cfg.ai.binding === 'string' && typeof cfg.ai.model !== 'string' ? [cfg.ai.binding] : [];

  const services = list('services', cfg.services);
  if (services.length) {
    spec.bindings = {
      ...spec.bindings,
      services: services.map((s) => ({
        name: String(s.binding), worker: String(s.service),
        ...(typeof s.entrypoint === 'string' ? { entrypoint: s.entrypoint } : {}),
      })),
    };
    for (const s of services) if (s.environment !== undefined) note(`services ${String(s.binding)}`, 'environment is not supported (name the environment\'s worker, <service>-<env>); it was left out');
  }

  const loaders = list('worker_loaders', cfg.worker_loaders);
  if (loaders.length) {
    for (const l of loaders) if (typeof l.binding !== 'string') throw new WranglerConfigError(`${base}: worker_loaders entries need binding = "NAME"`);
    spec.bindings = { ...spec.bindings, workerLoaders: loaders.map((l) => ({ name: String(l.binding) })) };
  }

  const rules: ModuleRule[] = list('rules', cfg.rules).map((r) => {
    if (!MODULE_RULE_TYPES.includes(r.type as ModuleRule['type'])) throw new WranglerConfigError(`${base}: rules: type "${String(r.type)}" is not one of ${MODULE_RULE_TYPES.join(', ')}`);
    if (!Array.isArray(r.globs) || !r.globs.every((g) => typeof g === 'string')) throw new WranglerConfigError(`${base}: rules: a ${String(r.type)} rule needs globs, a list of strings`);
    return { type: r.type as ModuleRule['type'], globs: r.globs as string[], ...(r.fallthrough === true ? { fallthrough: true } : {}) };
  });

  if (cfg.limits !== undefined) {
    if (!isObj(cfg.limits)) throw new WranglerConfigError(`${base}: limits must be a table`);
    for (const k of Object.keys(cfg.limits)) if (k !== 'cpu_ms') note(`limits.${k}`, 'is not supported by edge-isolates; it was left out');
    const cpu = cfg.limits.cpu_ms;
    if (cpu !== undefined) {
      if (typeof cpu !== 'number' || !Number.isInteger(cpu) || cpu < 1) throw new WranglerConfigError(`${base}: limits.cpu_ms must be a whole number of milliseconds`);
      spec.limits = { cpuMsPerRequest: cpu, wallMsPerRequest: Math.max(30_000, cpu) };
    }
  }

  const routeSpecs: unknown[] = [];
  if (cfg.route !== undefined) routeSpecs.push(cfg.route);
  if (cfg.routes !== undefined) {
    if (!Array.isArray(cfg.routes)) throw new WranglerConfigError(`${base}: routes must be a list`);
    routeSpecs.push(...(cfg.routes as unknown[]));
  }
  if (routeSpecs.length) {
    spec.routes = routeSpecs.map((r) => {
      const pattern = typeof r === 'string' ? r : isObj(r) && typeof r.pattern === 'string' ? r.pattern : undefined;
      if (!pattern) throw new WranglerConfigError(`${base}: routes: each route is a pattern or { pattern = "..." }`);
      if (isObj(r) && r.custom_domain === true && pattern.includes('/')) throw new WranglerConfigError(`${base}: routes: a custom_domain route is a host without a path, got "${pattern}"`);
      const route = routeFromPattern(pattern);
      return { pathPrefix: '/', ...route };
    });
  }

  let assets: AssetsConfig | undefined;
  if (cfg.assets !== undefined) {
    const a = cfg.assets;
    if (!isObj(a) || typeof a.directory !== 'string') throw new WranglerConfigError(`${base}: assets must be a table with directory = "DIR"`);
    if (a.binding !== undefined && (typeof a.binding !== 'string' || !ident.test(a.binding))) throw new WranglerConfigError(`${base}: assets.binding must be a JavaScript identifier`);
    const nf = a.not_found_handling;
    if (nf !== undefined && nf !== 'none' && nf !== '404-page' && nf !== 'single-page-application') throw new WranglerConfigError(`${base}: assets.not_found_handling must be none, 404-page or single-page-application`);
    const hh = a.html_handling;
    if (hh !== undefined && hh !== 'auto-trailing-slash' && hh !== 'none') note('assets.html_handling', `"${String(hh)}" is not supported (auto-trailing-slash and none are); auto-trailing-slash is used`);
    if (a.run_worker_first !== undefined && typeof a.run_worker_first !== 'boolean') note('assets.run_worker_first', 'as a list of routes is not supported; the assets are served first');
    assets = {
      directory: resolve(root, a.directory),
      ...(typeof a.binding === 'string' ? { binding: a.binding } : {}),
      ...(a.run_worker_first === true ? { runWorkerFirst: true } : {}),
      ...(nf ? { notFoundHandling: nf } : {}),
      ...(hh === 'none' ? { htmlHandling: 'none' as const } : {}),
    };
    for (const k of Object.keys(a)) if (!['directory', 'binding', 'run_worker_first', 'not_found_handling', 'html_handling'].includes(k)) note(`assets.${k}`, 'is not supported; it was left out');
  }
  if (!main && !assets) throw new WranglerConfigError(`${base}: main is required (or assets, for a static site)`);

  const record = (k: string): Record<string, string> | undefined => {
    const v = cfg[k];
    if (v === undefined) return undefined;
    if (!isObj(v) || !Object.values(v).every((x) => typeof x === 'string')) throw new WranglerConfigError(`${base}: ${k} must be a table of strings`);
    return v as Record<string, string>;
  };
  const define = record('define');
  const alias = record('alias');
  const bool = (k: string): boolean | undefined => {
    const v = cfg[k];
    if (v !== undefined && typeof v !== 'boolean') throw new WranglerConfigError(`${base}: ${k} must be true or false`);
    return v;
  };
  const noBundle = bool('no_bundle');
  const findAdditional = bool('find_additional_modules');
  if (cfg.base_dir !== undefined && typeof cfg.base_dir !== 'string') throw new WranglerConfigError(`${base}: base_dir must be a directory`);
  if (cfg.preserve_file_names !== undefined) note('preserve_file_names', 'has no effect: modules keep their names here');
  if ((noBundle || findAdditional) && !main) throw new WranglerConfigError(`${base}: no_bundle and find_additional_modules need main`);
  return {
    file, root, name, ...(main ? { main } : {}), spec, actors, rules, ...(assets ? { assets } : {}),
    ...(typeof cfg.minify === 'boolean' ? { minify: cfg.minify } : {}),
    ...(noBundle !== undefined ? { noBundle } : {}), ...(findAdditional !== undefined ? { findAdditionalModules: findAdditional } : {}),
    ...(typeof cfg.base_dir === 'string' ? { baseDir: resolve(root, cfg.base_dir) } : {}),
    ...(define ? { define } : {}), ...(alias ? { alias } : {}),
    notes, aiBindingsWithoutModel,
  };
}

/**
 * The compatibility flags the EdgeWorker API accepts: those its `compatibilityFlags` field
 * parses. Where the API has no such field, every flag is refused with a note.
 */
export function compatibilityFlagsField(flags: string[], refuse: (flag: string, why: string) => void): string[] {
  const field = (EdgeWorkerSpecSchema.shape as Record<string, unknown>).compatibilityFlags as { safeParse(v: unknown): { success: boolean } } | undefined;
  if (!field) {
    for (const f of flags) refuse(f, 'is not supported: this EdgeWorker API has no spec.compatibilityFlags');
    return [];
  }
  return flags.filter((f) => {
    const ok = field.safeParse([f]).success;
    if (!ok) refuse(f, 'is not a compatibility flag edge-isolates implements');
    return ok;
  });
}
