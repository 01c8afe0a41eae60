import { readFileSync } from 'node:fs';
import { relative, resolve, sep } from 'node:path';
import type { Plugin } from 'esbuild';
import { EdgeError } from '../common/errors.js';

// wrangler's module rules, applied while bundling: a file a rule matches is imported as a
// string (Text), an ArrayBuffer (Data), a compiled WebAssembly.Module (CompiledWasm) or
// parsed JSON. Everything stays one ES module: the bytes are embedded in the bundle and a
// .wasm is compiled by `new WebAssembly.Module` when the bundle loads, inside the isolate,
// so the isolate's wasm memory limits (node-agent/shim/web/wasm.js) apply to it as to any
// module the worker compiles itself.

export const MODULE_RULE_TYPES = ['ESModule', 'CommonJS', 'Text', 'Data', 'CompiledWasm', 'JSON'] as const;
export type ModuleRuleType = (typeof MODULE_RULE_TYPES)[number];
export interface ModuleRule { type: ModuleRuleType; globs: string[]; fallthrough?: boolean }

/** wrangler's default rules (its DEFAULT_MODULE_RULES). */
export const DEFAULT_MODULE_RULES: readonly ModuleRule[] = [
  { type: 'Text', globs: ['**/*.txt', '**/*.html', '**/*.sql'] },
  { type: 'Data', globs: ['**/*.bin'] },
  { type: 'CompiledWasm', globs: ['**/*.wasm', '**/*.wasm?module'] },
];

export class ModuleRuleError extends EdgeError {}

/**
 * The rules in force: the project's first, then each default rule unless a project rule of
 * the same type without `fallthrough: true` replaced it (wrangler's order).
 */
export function effectiveRules(custom: readonly ModuleRule[] = []): ModuleRule[] {
  for (const r of custom) {
    if (!MODULE_RULE_TYPES.includes(r.type)) throw new ModuleRuleError(`rules: type "${String(r.type)}" is not one of ${MODULE_RULE_TYPES.join(', ')}`);
    if (!Array.isArray(r.globs) || r.globs.some((g) => typeof g !== 'string')) throw new ModuleRuleError(`rules: a ${r.type} rule needs globs, a list of strings`);
  }
  const replaced = new Set(custom.filter((r) => !r.fallthrough).map((r) => r.type));
  return [...custom, ...DEFAULT_MODULE_RULES.filter((r) => !replaced.has(r.type))];
}

/** A glob as a RegExp: `**` any number of directories, `*` and `?` within one name, `{a,b}`. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      const slash = glob[i + 2] === '/';
      re += slash ? '(?:.*/)?' : '.*';
      i += slash ? 2 : 1;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '{') {
      const end = glob.indexOf('}', i);
      if (end < 0) { re += '\\{'; continue; }
      re += `(?:${glob.slice(i + 1, end).split(',').map((s) => s.replace(/[.+^$()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')).join('|')})`;
      i = end;
    } else re += c.replace(/[.+^$()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** The type of the first rule whose glob matches `file` (relative to `root`, with its `?query`), if any. */
export function ruleFor(rules: readonly ModuleRule[], root: string, file: string, query = ''): ModuleRuleType | undefined {
  const rel = relative(root, file).split(sep).join('/') + query;
  const base = rel.slice(rel.lastIndexOf('/') + 1);
  for (const r of rules) {
    // wrangler matches "**/*.txt" against a file at the root too (globs are relative paths).
    if (r.globs.some((g) => { const re = globToRegExp(g); return re.test(rel) || (g.startsWith('**/') && re.test(base)); })) return r.type;
  }
  return undefined;
}

const BYTES_NS = 'edge-module-bytes';

/** The esbuild plugin applying `rules` to every file it loads under `root`. */
export function moduleRulesPlugin(rules: readonly ModuleRule[], root: string): Plugin {
  return {
    name: 'edge-module-rules',
    setup(b) {
      // `import wasm from './x.wasm?module'` (wrangler's spelling): the file without its query.
      b.onResolve({ filter: /\?module$/ }, async (args) => {
        if (args.namespace === BYTES_NS) return undefined;
        const r = await b.resolve(args.path.slice(0, -'?module'.length), { kind: args.kind, resolveDir: args.resolveDir, importer: args.importer });
        if (r.errors.length) return { errors: r.errors };
        return { path: r.path, suffix: '?module' };
      });
      // The bytes' module is named by its path relative to the project, so the bundle's
      // comments do not carry the deploying machine's directories.
      b.onResolve({ filter: new RegExp(`^${BYTES_NS}:`) }, (args) => ({ path: args.path.slice(BYTES_NS.length + 1), namespace: BYTES_NS }));
      b.onLoad({ filter: /.*/, namespace: BYTES_NS }, (args) => ({ contents: readFileSync(resolve(root, args.path)), loader: 'binary' }));
      b.onLoad({ filter: /.*/, namespace: 'file' }, (args) => {
        const type = ruleFor(rules, root, args.path, args.suffix);
        const bytes = `import bytes from ${JSON.stringify(`${BYTES_NS}:${relative(root, args.path).split(sep).join('/')}`)};\n`;
        switch (type) {
          case 'Text': return { contents: readFileSync(args.path, 'utf8'), loader: 'text' };
          case 'JSON': return { contents: readFileSync(args.path, 'utf8'), loader: 'json' };
          case 'Data': return { contents: `${bytes}export default bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);\n`, loader: 'js' };
          case 'CompiledWasm': return { contents: `${bytes}export default new WebAssembly.Module(bytes);\n`, loader: 'js' };
          case 'CommonJS': case 'ESModule': return { contents: readFileSync(args.path, 'utf8'), loader: 'js' };
          default: return undefined;
        }
      });
    },
  };
}
