import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { extname, join, relative, resolve, sep } from 'node:path';
import type { Plugin } from 'esbuild';
import { MODULE_MAP_LIMITS, type ModuleEntry, type ModuleMap } from '../common/module-map.js';
import { effectiveRules, ModuleRuleError, ruleFor, type ModuleRule, type ModuleRuleType } from './module-rules.js';

// wrangler's `no_bundle` and `find_additional_modules` (its find-additional-modules.ts): the
// files under the module root (base_dir, default the entry's directory) that a module rule
// matches are uploaded as modules of their own, named by their path relative to that root,
// and the worker's source becomes a module map (common/module-map.ts). As in wrangler, only
// the rules decide: JavaScript files are modules only where an ESModule or CommonJS rule
// names them (the default rules are Text, Data and CompiledWasm); the wrangler config file
// and the .wrangler directory are never modules.

const SKIP_DIRS = new Set(['.wrangler', '.git']);

/** A project-relative module name, '/'-separated. */
export const moduleNameOf = (root: string, file: string): string => relative(root, file).split(sep).join('/');

function entryFor(type: ModuleRuleType, file: string): ModuleEntry {
  switch (type) {
    case 'ESModule': return { js: readFileSync(file, 'utf8') };
    case 'CommonJS': return { cjs: readFileSync(file, 'utf8') };
    case 'Text': return { text: readFileSync(file, 'utf8') };
    case 'Data': return { data: readFileSync(file).toString('base64') };
    case 'CompiledWasm': return { wasm: readFileSync(file).toString('base64') };
    case 'JSON':
      try { return { json: JSON.parse(readFileSync(file, 'utf8')) as unknown }; } catch (err) {
        throw new ModuleRuleError(`${file}: a JSON module must parse: ${(err as Error).message}`, { cause: err });
      }
  }
}

export interface FindModulesOptions {
  /** The module root (wrangler's base_dir). */
  root: string;
  /** The project's rules (the defaults apply after them, as in wrangler). */
  rules?: readonly ModuleRule[];
  /** Absolute paths that are never modules (the config file, the entry). */
  exclude?: readonly string[];
}

/** Every file under `root` a rule matches, as map entries by module name. */
export function findAdditionalModules(opts: FindModulesOptions): ModuleMap['modules'] {
  const rules = effectiveRules(opts.rules);
  const exclude = new Set((opts.exclude ?? []).map((f) => resolve(f)));
  const modules: ModuleMap['modules'] = {};
  let count = 0;
  const walk = (dir: string): void => {
    for (const ent of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, ent.name);
      if (ent.isDirectory()) { if (!SKIP_DIRS.has(ent.name)) walk(path); continue; }
      if (!ent.isFile() || exclude.has(path)) continue;
      const type = ruleFor(rules, opts.root, path);
      if (!type) continue;
      if (++count > MODULE_MAP_LIMITS.modules) {
        throw new ModuleRuleError(`more than ${MODULE_MAP_LIMITS.modules} files under ${opts.root} match the module rules; narrow the rules' globs or base_dir`);
      }
      modules[moduleNameOf(opts.root, path)] = entryFor(type, path);
    }
  };
  walk(opts.root);
  return modules;
}

/** The name the entry has in the map: its path under the root (a bundled entry ends in .js). */
export function mainModuleName(root: string, main: string, bundled: boolean): string {
  const rel = moduleNameOf(root, main);
  if (rel.startsWith('../') || rel === '..' || rel === '') throw new ModuleRuleError(`the entry ${main} is not under base_dir ${root}`);
  return bundled && extname(rel) !== '.js' ? rel.slice(0, rel.length - extname(rel).length) + '.js' : rel;
}

/** `no_bundle`: the entry as it is, and every module the rules find. */
export function unbundledModuleMap(main: string, opts: FindModulesOptions): ModuleMap {
  const modules = findAdditionalModules({ ...opts, exclude: [...(opts.exclude ?? []), main] });
  const mainModule = mainModuleName(opts.root, main, false);
  const type = ruleFor(effectiveRules(opts.rules), opts.root, main);
  // The entry is an ES module (wrangler's modules format) unless a CommonJS rule names it.
  return { mainModule, modules: { [mainModule]: type === 'CommonJS' ? { cjs: readFileSync(main, 'utf8') } : { js: readFileSync(main, 'utf8') }, ...modules } };
}

/**
 * `find_additional_modules` while bundling: an import of a file a rule matches stays an import,
 * rewritten relative to the bundle (named mainName), and that file is uploaded beside it.
 */
export function additionalModulesPlugin(opts: { root: string; rules?: readonly ModuleRule[]; main: string; mainName: string }): Plugin {
  const rules = effectiveRules(opts.rules);
  const mainDir = opts.mainName.split('/').slice(0, -1);
  return {
    name: 'edge-additional-modules',
    setup(b) {
      b.onResolve({ filter: /^\.\.?\// }, (args) => {
        if (args.namespace !== 'file' || !args.resolveDir) return undefined;
        const query = args.path.endsWith('?module') ? '?module' : '';
        const file = resolve(args.resolveDir, query ? args.path.slice(0, -query.length) : args.path);
        if (file === resolve(opts.main) || !existsSync(file)) return undefined;
        const name = moduleNameOf(opts.root, file);
        if (name.startsWith('../') || !ruleFor(rules, opts.root, file, query)) return undefined;
        // The specifier, relative to the bundle's own name.
        const target = name.split('/');
        let i = 0;
        while (i < mainDir.length && i < target.length - 1 && mainDir[i] === target[i]) i++;
        const spec = [...mainDir.slice(i).map(() => '..'), ...target.slice(i)].join('/');
        return { path: spec.startsWith('.') ? spec : `./${spec}`, external: true };
      });
    },
  };
}
