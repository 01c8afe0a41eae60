import ivm from 'isolated-vm';
import { EdgeError } from '../../common/errors.js';
import { NODE_BUILTIN_MODULES, NODE_MODULES_GLOBAL } from '../../common/builtin-modules.js';
import { resolveModuleName, type ModuleMap } from '../../common/module-map.js';
import type { WarmIsolate } from './pool.js';

// A multi-module worker (common/module-map.ts) in one isolate, the way workerd loads a
// module map: ES modules are compiled by V8 as they are imported (each once per load);
// every other kind is a synthetic module whose default export is its value. The values live
// in the isolate, put there by one copy at load: text as a string, data and wasm as the bytes
// the host decoded from base64 once, json as the parsed value. A wasm module is compiled in
// the isolate (through the shim's WebAssembly, which bounds its memory) the first time it is
// imported or required. CommonJS modules are functions compiled from scripts named after
// their module (stacks name the file), run on first require() or import with Node's cache
// semantics: a require cycle gets the partial module.exports, never a loop.

/** An import or require that does not name a module of the map (the worker's load fails with it). */
export class ModuleImportError extends EdgeError {}

/** Globals the load uses to reach the in-isolate table; removed when the load ends. */
const VALUE_GLOBAL = '__edgeModuleValue';
const DEFINE_GLOBAL = '__edgeModuleDefine';

// The in-isolate table, run once per load by evalClosure ($0: the values, $1: the Node
// module names with nodejs_compat, else null). The resolution rules mirror
// resolveModuleName in common/module-map.ts.
const RUNTIME = `
const values = $0;
const nodeNames = $1;
const nodeMods = nodeNames ? globalThis.${NODE_MODULES_GLOBAL} : undefined;
const hasOwn = Object.hasOwn;
const WasmModule = WebAssembly.Module;
const fns = new Map();
const done = new Map();
function resolve(from, spec) {
  const rel = spec.startsWith('./') || spec.startsWith('../');
  const out = rel ? from.split('/').slice(0, -1) : [];
  for (const seg of (spec.startsWith('/') ? spec.slice(1) : spec).split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') { if (out.length === 0) return null; out.pop(); continue; }
    out.push(seg);
  }
  return out.length ? out.join('/') : null;
}
function dirOf(name) { const i = name.lastIndexOf('/'); return i < 0 ? '' : name.slice(0, i); }
function load(name) {
  const e = values[name];
  if (e.t === 'cjs') {
    let m = done.get(name);
    if (m) return m.exports;
    m = { exports: {}, id: name, filename: name, loaded: false };
    done.set(name, m);
    try {
      fns.get(name).call(m.exports, m.exports, requireFrom(name), m, name, dirOf(name));
    } catch (err) { done.delete(name); throw err; }
    m.loaded = true;
    return m.exports;
  }
  if (e.t === 'wasm') {
    let m = done.get(name);
    if (!m) { m = { exports: new WasmModule(e.v) }; e.v = null; done.set(name, m); }
    return m.exports;
  }
  return e.v;
}
function requireFrom(from) {
  return function require(spec) {
    spec = String(spec);
    if (nodeMods) {
      const n = spec.startsWith('node:') ? spec.slice(5) : spec;
      if (nodeNames.includes(n)) return nodeMods[n];
    }
    const name = resolve(from, spec);
    if (name === null) throw new Error('require("' + spec + '") in "' + from + '" climbs out of the worker\\'s root');
    if (!hasOwn(values, name)) throw new Error('No such module "' + name + '" (required from "' + from + '" as "' + spec + '")');
    if (values[name].t === 'js') throw new TypeError('require() of ES module "' + name + '" from "' + from + '" is not supported; import it');
    return load(name);
  };
}
globalThis.${VALUE_GLOBAL} = load;
globalThis.${DEFINE_GLOBAL} = (name, fn) => { fns.set(name, fn); };
`;

type Value = { t: 'js' | 'cjs' } | { t: 'text'; v: string } | { t: 'data' | 'wasm'; v: ArrayBuffer } | { t: 'json'; v: unknown };

function bytes(base64: string): ArrayBuffer {
  const b = Buffer.from(base64, 'base64');
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

/** What the map's modules occupy once in an isolate, roughly (a string's UTF-16 length as bytes). */
export function moduleMapBytes(map: ModuleMap): number {
  let n = 0;
  for (const e of Object.values(map.modules)) {
    if ('js' in e) n += e.js.length;
    else if ('cjs' in e) n += e.cjs.length;
    else if ('text' in e) n += e.text.length;
    else if ('data' in e) n += Math.floor(e.data.length * 3 / 4);
    else if ('wasm' in e) n += Math.floor(e.wasm.length * 3 / 4);
    else n += JSON.stringify(e.json)?.length ?? 0;
  }
  return n;
}

export interface ModuleMapLoaderOptions {
  /** The Node module table exists (nodejs_compat): cjs require() of node:* reaches it. */
  nodeCompat: boolean;
  /** Bounds each step that runs in the isolate (the watchdog's startup budgets apply too). */
  timeoutMs: number;
}

/**
 * A map made ready for loading, once per worker version: the values decoded from base64 and
 * held in one ExternalCopy, so each isolate that loads the version costs one copy into it.
 */
export interface PreparedModuleMap {
  map: ModuleMap;
  values: ivm.ExternalCopy<Record<string, Value>>;
  /** The CommonJS modules' sources, by name. */
  cjs: [string, string][];
}

export function prepareModuleMap(map: ModuleMap): PreparedModuleMap {
  const values: Record<string, Value> = {};
  const cjs: [string, string][] = [];
  for (const [name, e] of Object.entries(map.modules)) {
    if ('js' in e) values[name] = { t: 'js' };
    else if ('cjs' in e) { values[name] = { t: 'cjs' }; cjs.push([name, e.cjs]); }
    else if ('text' in e) values[name] = { t: 'text', v: e.text };
    else if ('data' in e) values[name] = { t: 'data', v: bytes(e.data) };
    else if ('wasm' in e) values[name] = { t: 'wasm', v: bytes(e.wasm) };
    else values[name] = { t: 'json', v: e.json };
  }
  return { map, values: new ivm.ExternalCopy(values), cjs };
}

/** One load of a module map into one isolate. */
export class ModuleMapLoader {
  private readonly compiled = new Map<string, Promise<ivm.Module>>();
  private readonly names = new Map<ivm.Module, string>();

  private constructor(private readonly warm: WarmIsolate, private readonly map: ModuleMap) {}

  /** Copies the map's values into the isolate and compiles its CommonJS modules. */
  static async create(warm: WarmIsolate, prepared: PreparedModuleMap, opts: ModuleMapLoaderOptions): Promise<ModuleMapLoader> {
    const nodeNames = opts.nodeCompat ? new ivm.ExternalCopy([...NODE_BUILTIN_MODULES]).copyInto({ release: true }) : null;
    await warm.context.evalClosure(RUNTIME, [prepared.values.copyInto(), nodeNames], { timeout: opts.timeoutMs });
    for (const [name, source] of prepared.cjs) {
      // The wrapper's first line is line 0, so the module's own lines keep their numbers.
      const script = await warm.isolate.compileScript(`${DEFINE_GLOBAL}(${JSON.stringify(name)}, function (exports, require, module, __filename, __dirname) {\n${source}\n});`, { filename: name, lineOffset: -1 })
        .catch((err: unknown) => { throw new ModuleImportError(`module "${name}" does not compile: ${(err as Error).message}`, { cause: err }); });
      await script.run(warm.context, { timeout: opts.timeoutMs });
      script.release();
    }
    return new ModuleMapLoader(warm, prepared.map);
  }

  /** The main module, compiled. */
  main(): Promise<ivm.Module> { return this.module(this.map.mainModule); }

  /** The module `specifier` names when `referrer` imports it (a module this loader compiled). */
  resolve(specifier: string, referrer: ivm.Module): Promise<ivm.Module> {
    const importer = this.names.get(referrer) ?? this.map.mainModule;
    const name = resolveModuleName(importer, specifier);
    if (name === null) return Promise.reject(new ModuleImportError(`module "${importer}" imports "${specifier}", which climbs out of the worker's root`));
    if (!Object.hasOwn(this.map.modules, name)) {
      return Promise.reject(new ModuleImportError(`No such module "${name}" (imported from "${importer}" as "${specifier}"); the worker's modules are ${describeNames(Object.keys(this.map.modules))}`));
    }
    return this.module(name);
  }

  private module(name: string): Promise<ivm.Module> {
    let m = this.compiled.get(name);
    if (!m) {
      const e = this.map.modules[name]!;
      const source = 'js' in e ? e.js : `const v = globalThis.${VALUE_GLOBAL}(${JSON.stringify(name)});\nexport default v;\n`;
      m = this.warm.isolate.compileModule(source, { filename: name }).then((mod) => { this.names.set(mod, name); return mod; }, (err: unknown) => {
        throw new ModuleImportError(`module "${name}" does not compile: ${(err as Error).message}`, { cause: err });
      });
      this.compiled.set(name, m);
    }
    return m;
  }

  /** Removes the load's globals; require() inside CommonJS keeps its own reference to the table. */
  async finish(): Promise<void> {
    await this.warm.context.eval(`delete globalThis.${VALUE_GLOBAL}; delete globalThis.${DEFINE_GLOBAL};`);
  }
}

function describeNames(names: string[]): string {
  const shown = names.slice(0, 10).map((n) => `"${n}"`).join(', ');
  return names.length > 10 ? `${shown} and ${names.length - 10} more` : shown;
}
