import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, extname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import type { Message, Plugin } from 'esbuild';
import { BUILTIN_MODULES, NODEJS_COMPAT_FLAG, NODE_BUILTIN_MODULES, NODE_UNSUPPORTED_MODULES, isBuiltinModule, nodeImportRefusal, nodeModuleName } from '../common/builtin-modules.js';
import { COMPATIBILITY_FLAGS } from '../common/api/edgeworker.js';
import { stringify } from 'yaml';
import {
  API_VERSION, DNS_LABEL_PATTERN, JS_IDENTIFIER_PATTERN, MAX_INLINE_SOURCE_BYTES, MAX_SOURCE_BYTES, type EdgeWorkerSpec,
} from '../common/api/index.js';
import { MANAGED_BY_LABEL, POOL_ISOLATE, POOL_LABEL, REGION_LABEL, WORKER_LABEL } from '../common/labels.js';
import { ConditionReasons } from '../common/reasons.js';
import { crPath, isNotFound, KubeClient, KubeError } from '../operator/runtime/kube-client.js';
import {
  resolveCluster, TERMINAL_REASONS, workerReadiness, type DevState, type EdgeWorkerObj,
} from './cluster-client.js';
import { EdgeError } from '../common/errors.js';
import { GZIP_KEY_SUFFIX } from '../common/resolve-bindings.js';
import { AssetsError, assetsEntry, assetsModule, type AssetsConfig } from './assets.js';
import { effectiveRules, ModuleRuleError, moduleRulesPlugin, type ModuleRule } from './module-rules.js';
import { additionalModulesPlugin, findAdditionalModules, mainModuleName, unbundledModuleMap } from './module-map-build.js';
import { encodeModuleMap, ModuleMapError } from '../common/module-map.js';
import { findWranglerConfig, loadWranglerProject, WRANGLER_FILES, WranglerConfigError, type WranglerProject } from './wrangler-config.js';

// `edge deploy [FILE.js]` (no file: the wrangler project here, cli/wrangler-config.ts): bundle a worker with esbuild, put it in an EdgeWorker (inline, or
// a ConfigMap when it is bigger than an inline source may be), server-side apply it, and
// wait until every placed region serves the new version.

export const DEPLOY_USAGE = `usage: edge deploy [FILE.js] [--env ENV] [--name NAME] [--namespace NS] [--regions a,b]
                   [--route HOST[/PATH]]... [--var KEY=VALUE]... [--actor BINDING=DURABLEACTOR]...
                   [--ai BINDING=MODEL]... [--service BINDING=WORKER[:ENTRYPOINT]]...
                   [--compatibility-date YYYY-MM-DD] [--compatibility-flag FLAG]... [--cpu-ms N]
                   [--min-warm N] [--minify] [--no-bundle] [--no-source-map] [--kubeconfig FILE]
                   [--no-wait] [--timeout SECONDS] [--dry-run]

Bundles FILE.js and what it imports with esbuild (ES module, es2022, no Node built-ins),
then creates or updates the EdgeWorker NAME (default: the file's name) with server-side
apply. A bundle over ${MAX_INLINE_SOURCE_BYTES} bytes goes in ConfigMap NAME-bundle instead of
inline, gzip-compressed (binaryData key worker.js.gz; at most ${MAX_SOURCE_BYTES} bytes unpacked). Then it waits until the new version is Ready, printing each region's
ready/desired agents; when the operator refuses it (BundleInvalid, SourceNotFound, ...)
it prints why and exits 1.

Without FILE it deploys the wrangler project of the current directory (wrangler.json,
wrangler.jsonc or wrangler.toml): main, name, compatibility_date/flags, vars, durable_objects
and migrations (each class a DurableActor NAME-CLASS: new_classes kv storage,
new_sqlite_classes sqlite), services, ai (with model, or --ai), rules, limits.cpu_ms, routes,
assets (embedded in the bundle, served before the worker), minify, define, alias; --env ENV
applies [env.ENV]. Every key it cannot honour is printed and left out. Flags override the
file. Module rules apply to every bundle: .txt/.html/.sql as text, .bin as an ArrayBuffer,
.wasm as a WebAssembly.Module, .json parsed. With no_bundle = true (or --no-bundle) nothing is
bundled: main and every file under base_dir (default: main's directory) that a rule matches
(ESModule and CommonJS rules name the JavaScript ones) are uploaded as a module map; with
find_additional_modules = true the files the rules match stay modules beside the bundle.

  --route HOST[/PATH]   repeatable; default NAME.localhost
  --regions a,b         default: every region with isolate nodes; a region without any is
                        refused before anything is applied
  --var KEY=VALUE       env.KEY (repeatable)
  --actor B=DA          env.B is the DurableActor DA of the namespace (repeatable)
  --ai B=MODEL          env.B.run(MODEL, ...) on the regions' GPU model servers (repeatable)
  --service B=W[:E]     env.B is the EdgeWorker W of the namespace: fetch() and RPC to its
                        default export, or to its WorkerEntrypoint export E (repeatable)
  --env ENV             the [env.ENV] of the wrangler project (its worker is NAME-ENV)
  --compatibility-flag FLAG
                        spec.compatibilityFlags (repeatable): nodejs_compat provides node:buffer,
                        node:events, node:async_hooks, node:util, node:process, node:crypto,
                        node:stream, node:string_decoder, node:path, node:url and the Buffer
                        and process globals
  --no-bundle           upload FILE as it is, with the files under its directory that the
                        module rules match as modules of their own (wrangler's no_bundle)
  --no-source-map       leave out the inline source map (sources' text never included) the
                        bundle otherwise ends with; the agents map uncaught exceptions' stacks
                        through it to your files (edge logs, edge dev)
  --dry-run             print the objects it would apply, as YAML, and stop
  --kubeconfig FILE     default: $KUBECONFIG, else the running \`edge dev\`, else ~/.kube/config
  --namespace NS        default: the kubeconfig context's namespace, else default
`;

const FIELD_MANAGER = 'edge-deploy';
/** etcd and the apiserver cap a ConfigMap's data at 1 MiB. */
const MAX_CONFIGMAP_BYTES = 1024 * 1024 - 1024;
const CONFIGMAP_KEY = `worker.js${GZIP_KEY_SUFFIX}`;

class UsageError extends EdgeError {}

function pairs(flag: string, values: string[] | undefined, keyPattern?: RegExp): [string, string][] {
  return (values ?? []).map((v) => {
    const i = v.indexOf('=');
    if (i <= 0) throw new UsageError(`${flag} must be KEY=VALUE, got "${v}"`);
    const k = v.slice(0, i);
    if (keyPattern && !keyPattern.test(k)) throw new UsageError(`${flag}: "${k}" is not a JavaScript identifier (it becomes env.${k})`);
    return [k, v.slice(i + 1)];
  });
}

function defaultName(file: string): string {
  return basename(file, extname(file)).toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 63) || 'worker';
}

/**
 * The runtime's built-in modules (cloudflare:workers) stay imports of the bundle, resolved
 * by the isolate; any other cloudflare:* module is an error naming what exists.
 */
const builtinModules: Plugin = {
  name: 'edge-builtin-modules',
  setup(b) {
    b.onResolve({ filter: /^cloudflare:/ }, (args) => isBuiltinModule(args.path)
      ? { path: args.path, external: true }
      : { errors: [{ text: `"${args.path}" is not a module this runtime provides (it provides ${Object.keys(BUILTIN_MODULES).join(', ')})` }] });
  },
};

const escapeRe = (s: string) => s.replace(/[/\\^$.*+?()[\]{}|]/g, '\\$&');
const NODE_NAMES_FILTER = new RegExp(`^(node:.*|${[...NODE_BUILTIN_MODULES, ...NODE_UNSUPPORTED_MODULES].map(escapeRe).join('|')})$`);

/**
 * Node built-ins. With nodejs_compat, `node:X` and the bare `X` (as wrangler does with the
 * flag) stay imports of `node:X`, provided by the isolate; one this runtime does not
 * provide is an error. Without the flag a `node:` import is an error naming the flag, and a
 * bare name resolves as any package would (an npm polyfill of that name, if installed).
 */
function nodeModules(flags: readonly string[]): Plugin {
  const compat = flags.includes(NODEJS_COMPAT_FLAG);
  return {
    name: 'edge-node-modules',
    setup(b) {
      b.onResolve({ filter: NODE_NAMES_FILTER }, (args) => {
        const bare = !args.path.startsWith('node:');
        if (bare && !compat) return undefined;
        const name = nodeModuleName(args.path);
        if (compat && name !== null) {
          // A CommonJS require() of a built-in cannot stay a require in an ES module: it
          // becomes a module that imports it (wrangler does the same).
          return args.kind === 'require-call' ? { path: name, namespace: 'edge-node-require' } : { path: `node:${name}`, external: true };
        }
        return { errors: [{ text: nodeImportRefusal(args.path, flags).replace(/^imports /, 'this imports ') }] };
      });
      b.onLoad({ filter: /.*/, namespace: 'edge-node-require' }, (args) => ({
        contents: `import m from ${JSON.stringify(`node:${args.path}`)};\nmodule.exports = m;\n`, loader: 'js',
      }));
    },
  };
}

export interface BundleOptions {
  minify?: boolean;
  /** wrangler's module rules (Text, Data, CompiledWasm, JSON, ...); the defaults apply when omitted. */
  rules?: readonly ModuleRule[];
  /** The directory rule globs are relative to (default: the file's directory). */
  root?: string;
  /** Static assets embedded in the bundle and served before the worker (cli/assets.ts). */
  assets?: AssetsConfig;
  define?: Record<string, string>;
  alias?: Record<string, string>;
  /** spec.compatibilityFlags: with nodejs_compat, Node built-ins stay imports the isolate provides. */
  compatibilityFlags?: readonly string[];
  /** find_additional_modules: imports of files the rules match under `root` stay imports of the bundle, named `mainName` in the module map. */
  additionalModules?: { root: string; mainName: string };
  /**
   * Append an inline source map (without the sources' text): the agents map an uncaught
   * exception's stack through it to the files it was built from (common/source-map.ts).
   */
  sourceMap?: boolean;
}

/** An inline source map comment at the end of a bundle (bundleWorker's sourceMap). */
export const INLINE_SOURCE_MAP = /\n\/\/# sourceMappingURL=data:application\/json;base64,[A-Za-z0-9+/=]+\s*$/;

const ASSETS_MODULE = 'edge-assets:module';

/** esbuild's bundle of `file` (undefined: an assets-only worker), or its errors formatted for a terminal. */
export async function bundleWorker(file: string | undefined, opts: BundleOptions = {}): Promise<{ code: string } | { errors: string }> {
  // Loaded here: esbuild is a devDependency (only deploy and dev bundle; the images have none).
  const { build, formatMessages } = await import('esbuild');
  const root = opts.root ?? (file ? dirname(file) : process.cwd());
  const plugins: Plugin[] = [builtinModules, moduleRulesPlugin(effectiveRules(opts.rules), root)];
  if (opts.additionalModules && file) plugins.unshift(additionalModulesPlugin({ ...opts.additionalModules, main: file, ...(opts.rules ? { rules: opts.rules } : {}) }));
  const assets = opts.assets;
  if (assets) {
    const mod = assetsModule(assets);
    plugins.unshift({
      name: 'edge-assets',
      setup(b) {
        b.onResolve({ filter: new RegExp(`^${ASSETS_MODULE}$`) }, () => ({ path: ASSETS_MODULE, namespace: 'edge-assets' }));
        b.onLoad({ filter: /.*/, namespace: 'edge-assets' }, () => ({ contents: mod.code, loader: 'js' }));
      },
    });
  }
  try {
    const out = await build({
      ...(assets
        ? { stdin: { contents: assetsEntry(file, ASSETS_MODULE, assets), resolveDir: root, sourcefile: 'edge-assets-entry.js', loader: 'js' } }
        : { entryPoints: [file!] }),
      bundle: true, write: false, format: 'esm', platform: 'neutral', target: 'es2022',
      mainFields: ['browser', 'module', 'main'], conditions: ['workerd', 'worker', 'browser'],
      minify: opts.minify ?? false, logLevel: 'silent', legalComments: 'none', charset: 'utf8',
      ...(opts.sourceMap ? { sourcemap: 'inline' as const, sourcesContent: false } : {}),
      ...(opts.define ? { define: opts.define } : {}), ...(opts.alias ? { alias: opts.alias } : {}),
      plugins: [...plugins, nodeModules(opts.compatibilityFlags ?? [])],
      // With nodejs_compat, async functions become generators resumed through
      // Promise.prototype.then, which the isolate wraps to carry AsyncLocalStorage's context
      // across `await` (V8 here has no AsyncContext; see node-agent/shim/node/async-context.js).
      ...(opts.compatibilityFlags?.includes(NODEJS_COMPAT_FLAG) ? { supported: { 'async-await': false, 'async-generator': false, 'for-await': false } } : {}),
    });
    return { code: out.outputFiles[0]?.text ?? '' };
  } catch (err) {
    const messages = (err as { errors?: Message[] }).errors;
    if (!messages?.length) throw err;
    const text = (await formatMessages(messages, { kind: 'error', color: Boolean(process.stderr.isTTY) })).join('');
    const builtin = messages.some((m) => /Could not resolve "(node:|fs"|path"|crypto"|http)/.test(m.text));
    return { errors: text + (builtin ? `Node built-ins do not exist in a worker without the ${NODEJS_COMPAT_FLAG} compatibility flag (--compatibility-flag ${NODEJS_COMPAT_FLAG}); otherwise use the Web APIs (fetch, crypto.subtle, URL, streams).\n` : '') };
  }
}

export async function runDeploy(argv: string[]): Promise<number> {
  let values, positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: argv, allowPositionals: true,
      options: {
        name: { type: 'string' }, namespace: { type: 'string', short: 'n' }, regions: { type: 'string' },
        route: { type: 'string', multiple: true }, var: { type: 'string', multiple: true },
        actor: { type: 'string', multiple: true }, ai: { type: 'string', multiple: true }, service: { type: 'string', multiple: true },
        'compatibility-date': { type: 'string' }, 'compatibility-flag': { type: 'string', multiple: true }, 'cpu-ms': { type: 'string' }, 'min-warm': { type: 'string' },
        minify: { type: 'boolean' }, 'no-bundle': { type: 'boolean' }, 'no-source-map': { type: 'boolean' }, kubeconfig: { type: 'string' },
        env: { type: 'string' }, 'no-wait': { type: 'boolean' }, timeout: { type: 'string', default: '120' }, 'dry-run': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`edge deploy: ${(err as Error).message}\n\n${DEPLOY_USAGE}`);
    return 2;
  }
  if (values.help) { process.stdout.write(DEPLOY_USAGE); return 0; }
  const fail = (msg: string, code = 1) => { process.stderr.write(`edge deploy: ${msg}\n`); return code; };

  let spec: EdgeWorkerSpec | Record<string, unknown>;
  let name: string;
  let code: string;
  let timeoutS: number;
  let project: WranglerProject | undefined;
  let what: string;
  try {
    if (positionals.length > 1) throw new UsageError('give one FILE.js, or none to deploy the wrangler project of this directory');
    if (positionals.length === 0) {
      const config = findWranglerConfig(process.cwd());
      if (!config) throw new UsageError(`give FILE.js, or run it in a directory with ${WRANGLER_FILES.join(', ')}`);
      try {
        project = loadWranglerProject(config, values.env);
      } catch (err) {
        if (err instanceof WranglerConfigError) return fail(err.message);
        throw err;
      }
      for (const n of project.notes) process.stderr.write(`edge deploy: ${n}\n`);
    } else if (values.env !== undefined) throw new UsageError('--env selects an environment of a wrangler project: give no FILE');
    const file = project ? project.main : resolve(positionals[0]!);
    if (file && !existsSync(file)) return fail(`no such file: ${file}`, 2);
    what = project ? `${basename(project.file)} (${project.main ? basename(project.main) : 'assets only'})` : positionals[0]!;
    name = values.name ?? project?.name ?? defaultName(file!);
    if (!new RegExp(DNS_LABEL_PATTERN).test(name) || name.length > 63) throw new UsageError(`--name must be a DNS label (lower case letters, digits, '-'), got "${name}"`);
    const regions = values.regions?.split(',').map((r) => r.trim()).filter(Boolean);
    for (const r of regions ?? []) if (!new RegExp(DNS_LABEL_PATTERN).test(r)) throw new UsageError(`--regions: "${r}" is not a region name`);
    const routes = values.route
      ? values.route.map((r) => {
        const slash = r.indexOf('/');
        return slash < 0 ? { host: r.toLowerCase() } : { host: r.slice(0, slash).toLowerCase(), pathPrefix: r.slice(slash) };
      })
      : project?.spec.routes ?? [{ host: `${name}.localhost` }];
    const ident = new RegExp(JS_IDENTIFIER_PATTERN);
    const vars = pairs('--var', values.var, ident);
    const actors = pairs('--actor', values.actor, ident);
    const ai = pairs('--ai', values.ai, ident);
    const services = pairs('--service', values.service, ident).map(([n, target]) => {
      const [worker = '', entrypoint, ...rest] = target.split(':');
      if (!new RegExp(DNS_LABEL_PATTERN).test(worker) || rest.length > 0 || (entrypoint !== undefined && !ident.test(entrypoint))) {
        throw new UsageError(`--service ${n}=${target}: expected WORKER[:ENTRYPOINT], a worker of this namespace and a JavaScript identifier`);
      }
      return { name: n, worker, ...(entrypoint !== undefined ? { entrypoint } : {}) };
    });
    const int = (flag: string, v: string | undefined) => {
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new UsageError(`${flag} must be a whole number, got "${v}"`);
      return n;
    };
    timeoutS = int('--timeout', values.timeout) ?? 120;
    const cpuMs = int('--cpu-ms', values['cpu-ms']);
    const minWarm = int('--min-warm', values['min-warm']);
    for (const b of project?.aiBindingsWithoutModel ?? []) {
      if (!ai.some(([n]) => n === b)) process.stderr.write(`edge deploy: ${basename(project!.file)}: ai binding ${b} was left out: an ai binding here serves one model of the cluster's catalogue; name it with --ai ${b}=MODEL (or model = "..." under [ai])\n`);
    }

    // The project's flags and the command line's.
    const flags = [...new Set([...((project?.spec as { compatibilityFlags?: string[] } | undefined)?.compatibilityFlags ?? []), ...(values['compatibility-flag'] ?? [])])];
    for (const f of flags) {
      if (!(COMPATIBILITY_FLAGS as readonly string[]).includes(f)) throw new UsageError(`--compatibility-flag: "${f}" is not a flag this runtime knows (it knows ${COMPATIBILITY_FLAGS.join(', ')})`);
    }
    const noBundle = values['no-bundle'] ?? project?.noBundle ?? false;
    // wrangler's module root: base_dir, else the entry's directory.
    const moduleRoot = project?.baseDir ?? (file ? dirname(file) : undefined);
    const exclude = project ? [project.file] : [];
    if (noBundle) {
      if (!file) throw new UsageError('--no-bundle needs an entry module (main)');
      if (project?.assets) throw new UsageError('--no-bundle: assets are embedded while bundling; deploy this project without no_bundle');
      // As in wrangler, no_bundle finds additional modules unless find_additional_modules = false.
      const map = project?.findAdditionalModules === false
        ? { mainModule: mainModuleName(moduleRoot!, file, false), modules: { [mainModuleName(moduleRoot!, file, false)]: { js: readFileSync(file, 'utf8') } } }
        : unbundledModuleMap(file, { root: moduleRoot!, ...(project ? { rules: project.rules } : {}), exclude });
      const only = Object.keys(map.modules).length === 1 ? map.modules[map.mainModule] : undefined;
      // A lone ES module travels as itself, as before module maps.
      code = only && 'js' in only ? only.js : encodeModuleMap(map);
      if (code.trim() === '') return fail(`${what} is empty`);
    } else {
      const additional = project?.findAdditionalModules === true && file ? { root: moduleRoot!, mainName: mainModuleName(moduleRoot!, file, true) } : undefined;
      const b = await bundleWorker(file, {
        ...(additional ? { additionalModules: additional } : {}),
        minify: values.minify ?? project?.minify ?? false,
        compatibilityFlags: flags,
        sourceMap: !values['no-source-map'],
        ...(project ? { root: project.root, rules: project.rules } : {}),
        ...(project?.assets ? { assets: project.assets } : {}),
        ...(project?.define ? { define: project.define } : {}),
        ...(project?.alias ? { alias: project.alias } : {}),
      });
      if ('errors' in b) { process.stderr.write(b.errors); return fail(`bundling ${what} failed; nothing was deployed`); }
      code = b.code;
      if (additional && code.trim() !== '') {
        const modules = findAdditionalModules({ root: additional.root, ...(project ? { rules: project.rules } : {}), exclude: [...exclude, file!] });
        if (Object.keys(modules).length > 0) code = encodeModuleMap({ mainModule: additional.mainName, modules: { ...modules, [additional.mainName]: { js: code } } });
      }
    }
    if (code.trim() === '') return fail(`${what} bundles to nothing`);
    // The project's bindings, then the flags' (a flag replaces a binding of the same name).
    const pb = project?.spec.bindings ?? {};
    const byName = <T extends { name: string }>(from: T[] | undefined, over: T[]): T[] => [...(from ?? []).filter((x) => !over.some((o) => o.name === x.name)), ...over];
    const allVars = { ...pb.vars, ...Object.fromEntries(vars) };
    const allActors = byName(pb.actors, actors.map(([n, actor]) => ({ name: n, actor })));
    const allAi = byName(pb.ai, ai.map(([n, model]) => ({ name: n, model, replicasPerRegion: 1 })));
    const allServices = byName(pb.services, services);
    const compatibilityDate = values['compatibility-date'] ?? project?.spec.compatibilityDate;
    const limits = cpuMs !== undefined ? { cpuMsPerRequest: cpuMs, wallMsPerRequest: Math.max(30_000, cpuMs) } : project?.spec.limits;
    const extra = project ? Object.fromEntries(Object.entries(project.spec).filter(([k]) => !['routes', 'bindings', 'compatibilityDate', 'limits'].includes(k))) : {};
    spec = {
      source: { inline: '' },
      routes,
      ...(regions || minWarm !== undefined ? { placement: { ...(regions ? { regions } : {}), ...(minWarm !== undefined ? { minWarmIsolates: minWarm } : {}) } } : {}),
      ...(compatibilityDate ? { compatibilityDate } : {}),
      ...extra,
      ...(flags.length ? { compatibilityFlags: flags } : {}),
      ...(limits ? { limits } : {}),
      ...(Object.keys(allVars).length || allActors.length || allAi.length || allServices.length ? {
        bindings: {
          ...(Object.keys(allVars).length ? { vars: allVars } : {}),
          ...(allActors.length ? { actors: allActors } : {}),
          ...(allAi.length ? { ai: allAi.map((x) => ({ name: x.name, model: x.model })) } : {}),
          ...(allServices.length ? { services: allServices } : {}),
        },
      } : {}),
    };
  } catch (err) {
    if (err instanceof UsageError) { process.stderr.write(`edge deploy: ${err.message}\n\n${DEPLOY_USAGE}`); return 2; }
    if (err instanceof ModuleRuleError || err instanceof AssetsError || err instanceof ModuleMapError) return fail(err.message);
    throw err;
  }

  if (Buffer.byteLength(code) > MAX_SOURCE_BYTES && INLINE_SOURCE_MAP.test(code)) {
    code = code.replace(INLINE_SOURCE_MAP, '\n');
    process.stderr.write(`edge deploy: the bundle is too big to carry its source map: left out (exceptions' stacks name lines of the bundle)\n`);
  }
  const bytes = Buffer.byteLength(code);
  const big = bytes > MAX_INLINE_SOURCE_BYTES;
  // A big bundle is stored compressed (an Agents SDK worker is ~1.1 MB, ~280 KB gzipped); the resolver unpacks it.
  const packed = big ? gzipSync(code, { level: 9 }) : undefined;
  if (bytes > MAX_SOURCE_BYTES) return fail(`the bundle is ${bytes} bytes; a worker's source is at most ${MAX_SOURCE_BYTES} (try --minify, or load large data at run time with fetch)`);
  if (packed && packed.byteLength > MAX_CONFIGMAP_BYTES) {
    return fail(`the bundle is ${bytes} bytes, ${packed.byteLength} gzip-compressed; a ConfigMap holds at most ${MAX_CONFIGMAP_BYTES} (try --minify, or load large data at run time with fetch)`);
  }
  const cmName = `${name}-bundle`;

  let target;
  try { target = await resolveCluster(values.kubeconfig); } catch (err) { if (!values['dry-run']) return fail((err as Error).message); }
  const namespace = values.namespace ?? target?.namespace ?? 'default';
  const ew = {
    apiVersion: API_VERSION, kind: 'EdgeWorker', metadata: { name, namespace },
    spec: { ...spec, source: big ? { configMapRef: { name: cmName, key: CONFIGMAP_KEY } } : { inline: code } },
  };
  const cm = {
    apiVersion: 'v1', kind: 'ConfigMap',
    metadata: { name: cmName, namespace, labels: { [MANAGED_BY_LABEL]: FIELD_MANAGER, [WORKER_LABEL]: name } },
    binaryData: { [CONFIGMAP_KEY]: packed?.toString('base64') ?? '' },
  };
  const actors = (project?.actors ?? []).map((a) => ({ ...a, metadata: { ...a.metadata, namespace } }));
  if (values['dry-run']) {
    process.stdout.write([...(big ? [cm] : []), ...actors, ew].map((o) => stringify(o, { lineWidth: 0 })).join('---\n'));
    return 0;
  }

  if (!target) return 1;
  const kube = new KubeClient(target.kc);
  const say = (s: string) => process.stdout.write(`${s}\n`);
  say(`bundled ${what}: ${bytes} bytes${packed ? ` (over ${MAX_INLINE_SOURCE_BYTES}: stored gzip-compressed, ${packed.byteLength} bytes, in ConfigMap ${namespace}/${cmName})` : ''}`);
  const cmPath = `/api/v1/namespaces/${namespace}/configmaps/${cmName}`;
  const apply = { fieldManager: FIELD_MANAGER, force: 'true', fieldValidation: 'Strict' };
  const requested = (spec as EdgeWorkerSpec).placement?.regions;
  if (requested?.length) {
    // Checked before anything is applied: a worker placed nowhere would be left behind, never Ready.
    const known = await clusterRegions(kube);
    const unknown = known ? requested.filter((r) => !known.includes(r)) : [];
    if (unknown.length > 0) {
      return fail(`--regions: no region ${unknown.map((r) => `"${r}"`).join(', ')} in this cluster (regions with isolate nodes: ${known!.length > 0 ? known!.join(', ') : 'none'}); nothing was applied`);
    }
  }
  let applied: EdgeWorkerObj;
  try {
    if (big) await kube.request('PATCH', cmPath, { patch: 'apply', body: cm, query: apply });
    // The migrations' classes first: the worker's actor bindings name them.
    for (const a of actors) {
      const before = await kube.request('GET', crPath('durableactors', namespace, a.metadata.name)).then(() => true, (err) => { if (isNotFound(err)) return false; throw err; });
      await kube.request('PATCH', crPath('durableactors', namespace, a.metadata.name), { patch: 'apply', body: a, query: apply });
      say(`${before ? 'applied' : 'created'} DurableActor ${namespace}/${a.metadata.name} (class ${a.spec.className}, ${a.spec.storage.backend} storage)`);
    }
    applied = await kube.request<EdgeWorkerObj>('PATCH', crPath('edgeworkers', namespace, name), { patch: 'apply', body: ew, query: apply });
    if (big) {
      // Owned by the worker, so deleting the worker deletes its bundle.
      await kube.request('PATCH', cmPath, {
        patch: 'merge',
        body: { metadata: { ownerReferences: [{ apiVersion: API_VERSION, kind: 'EdgeWorker', name, uid: applied.metadata.uid, controller: false, blockOwnerDeletion: false }] } },
      });
    } else {
      // A bundle that shrank back under the limit leaves its old ConfigMap behind: remove it when it is ours.
      try {
        const old = await kube.request<{ metadata: { labels?: Record<string, string> } }>('GET', cmPath);
        if (old.metadata.labels?.[MANAGED_BY_LABEL] === FIELD_MANAGER) await kube.request('DELETE', cmPath);
      } catch (err) { if (!isNotFound(err)) throw err; }
    }
  } catch (err) {
    if (err instanceof KubeError) return fail(`the apiserver refused it: ${err.message.replace(/^PATCH \S+: \d+ /, '')}`);
    throw err;
  }
  say(`${applied.metadata.generation === 1 ? 'created' : 'applied'} EdgeWorker ${namespace}/${name} (generation ${applied.metadata.generation}) via ${target.from}`);
  if (values['no-wait']) return 0;
  return waitReady(kube, namespace, name, applied.metadata.generation, timeoutS * 1000, target.dev, say);
}

/** The regions with isolate Nodes (what placement may name); undefined when Nodes cannot be listed (no RBAC for them). */
async function clusterRegions(kube: KubeClient): Promise<string[] | undefined> {
  try {
    const nodes = await kube.request<{ items: { metadata: { labels?: Record<string, string> } }[] }>('GET', '/api/v1/nodes', { query: { labelSelector: `${POOL_LABEL}=${POOL_ISOLATE}` } });
    return [...new Set(nodes.items.map((n) => n.metadata.labels?.[REGION_LABEL]).filter((r): r is string => r !== undefined))].sort();
  } catch {
    return undefined;
  }
}

/** Polls the worker until its current generation is Ready (0), refused (1) or the time is up (1). */
export async function waitReady(kube: KubeClient, namespace: string, name: string, generation: number, timeoutMs: number, dev: DevState | undefined, say: (s: string) => void): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  let terminalSince: { reason: string; at: number } | undefined;
  let w: EdgeWorkerObj | undefined;
  for (;;) {
    try {
      w = await kube.request<EdgeWorkerObj>('GET', crPath('edgeworkers', namespace, name));
    } catch (err) {
      if (!(err instanceof KubeError) || Date.now() > deadline) throw err;
    }
    if (w && w.metadata.generation !== generation) {
      say(`${namespace}/${name} changed again (generation ${w.metadata.generation}) while waiting; not waiting for it`);
      return 1;
    }
    const r = w ? workerReadiness(w) : undefined;
    if (r?.current) {
      const line = `  ${r.where || 'no regions yet'}  ${r.ready ? 'Ready' : r.reason}`;
      if (line !== last) { say(line); last = line; }
      if (r.ready) {
        say(`${name} is Ready: ${r.message} (bundle ${w!.status?.bundleDigest?.slice(0, 19) ?? '?'})`);
        for (const u of urls(w!, dev)) say(`  ${u}`);
        return 0;
      }
      // BundleInvalid is final for this version; a missing reference may be a moment away
      // from existing (watch lag), so give it a few seconds.
      if (TERMINAL_REASONS.has(r.reason)) {
        if (terminalSince?.reason !== r.reason) terminalSince = { reason: r.reason, at: Date.now() };
        if (r.reason === ConditionReasons.BundleInvalid || Date.now() - terminalSince.at > 5000) {
          process.stderr.write(`edge deploy: ${namespace}/${name} is not Ready: ${r.reason}: ${r.message}\n`);
          return 1;
        }
      } else terminalSince = undefined;
    }
    if (Date.now() > deadline) {
      process.stderr.write(`edge deploy: ${namespace}/${name} not Ready after ${Math.round(timeoutMs / 1000)} s: ${r ? `${r.reason}: ${r.message}` : 'no status'}\n`);
      return 1;
    }
    await new Promise((res) => setTimeout(res, 300));
  }
}

/** Where to reach the worker: through `edge dev`'s agents when it is the cluster. */
function urls(w: EdgeWorkerObj, dev: DevState | undefined): string[] {
  const regions = (w.status?.regions ?? []).filter((r) => r.readyAgents > 0).map((r) => r.name);
  const agent = dev?.agents.find((a) => regions.includes(a.region));
  if (!agent) return [];
  return (w.spec.routes ?? []).map((r) => {
    const path = r.pathPrefix ?? '/';
    return r.host.endsWith('.localhost')
      ? `http://${r.host}:${agent.port}${path}`
      : `curl -H 'Host: ${r.host.replace(/^\*\./, 'x.')}' http://127.0.0.1:${agent.port}${path}`;
  });
}
