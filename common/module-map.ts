import * as z from 'zod';
import { EdgeError, describeIssues } from './errors.js';

// A worker made of several modules (wrangler's `--no-bundle` uploads, `find_additional_modules`,
// and the Worker Loader's WorkerCode.modules). The source of a worker is one string everywhere
// it travels (spec.source.inline, a ConfigMap key, the bundle in the NATS object store,
// WorkerDefinition.source), so a module map travels as that string too: a header line no ES
// module starts with in practice, then the map as JSON. A source without the header is one ES
// module, as before. The isolate decodes it and resolves imports inside the map.

/** The first line of an encoded module map. `#!` keeps it a parse error nowhere that matters: a hashbang line is legal JS, but nothing else ever writes this one. */
export const MODULE_MAP_HEADER = '#!edge-modules v1\n';

/** The most modules one worker may have, and the longest module name. */
export const MODULE_MAP_LIMITS = { modules: 1024, nameLength: 512, jsonDepth: 1000 } as const;

// Standard base64 with padding (Buffer's and btoa's output): Buffer.from would skip anything else silently.
const base64 = () => z.string().regex(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/, { message: 'not base64' }).describe('base64');

/**
 * One module, as the Worker Loader's WorkerLoaderModule types it; binary contents (data, wasm)
 * are base64 so the map stays JSON.
 */
export const ModuleEntrySchema = z.union([
  z.object({ js: z.string() }).strict(),
  z.object({ cjs: z.string() }).strict(),
  z.object({ text: z.string() }).strict(),
  z.object({ data: base64() }).strict(),
  z.object({ json: z.unknown() }).strict(),
  z.object({ wasm: base64() }).strict(),
], { error: 'a module is exactly one of {js}, {cjs}, {text}, {data} (base64), {json}, {wasm} (base64)' });
export type ModuleEntry = z.infer<typeof ModuleEntrySchema>;
export type ModuleType = 'js' | 'cjs' | 'text' | 'data' | 'json' | 'wasm';

/**
 * A module name: a relative path inside the worker, '/'-separated, no '.' or '..' segments, no
 * leading '/' (imports are resolved against the importing module's directory and must land on
 * a name in the map).
 */
export const isModuleName = (n: string): boolean => n.length >= 1 && n.length <= MODULE_MAP_LIMITS.nameLength
  && !n.startsWith('/') && n.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..');
const MODULE_NAME_RULE = `a module name is a relative path of at most ${MODULE_MAP_LIMITS.nameLength} characters with no empty, "." or ".." segments`;
export const moduleName = () => z.string().refine(isModuleName, { message: MODULE_NAME_RULE });

export const ModuleMapSchema = z.object({
  mainModule: moduleName(),
  // Keys are checked below: a record's key refinement would report only "Invalid key in record".
  modules: z.record(z.string(), ModuleEntrySchema),
}).superRefine((m, ctx) => {
  for (const key of Object.keys(m.modules)) {
    if (!isModuleName(key)) ctx.addIssue({ code: 'custom', message: `"${key.slice(0, 100)}": ${MODULE_NAME_RULE}`, path: ['modules'] });
  }
  const n = Object.keys(m.modules).length;
  if (n > MODULE_MAP_LIMITS.modules) ctx.addIssue({ code: 'custom', message: `${n} modules; at most ${MODULE_MAP_LIMITS.modules}`, path: ['modules'] });
  const main = m.modules[m.mainModule];
  if (!main) ctx.addIssue({ code: 'custom', message: `mainModule "${m.mainModule}" is not in modules`, path: ['mainModule'] });
  else if (!('js' in main) && !('cjs' in main)) ctx.addIssue({ code: 'custom', message: `mainModule "${m.mainModule}" must be a js or cjs module`, path: ['mainModule'] });
});
export type ModuleMap = z.infer<typeof ModuleMapSchema>;

export const moduleTypeOf = (e: ModuleEntry): ModuleType => Object.keys(e)[0] as ModuleType;

export class ModuleMapError extends EdgeError {}

/** The worker source that carries this map. */
export function encodeModuleMap(map: ModuleMap): string {
  const r = ModuleMapSchema.safeParse(map);
  if (!r.success) throw new ModuleMapError(`the module map is invalid: ${describeIssues(r.error)}`);
  return MODULE_MAP_HEADER + JSON.stringify(r.data);
}

export const isModuleMapSource = (source: string): boolean => source.startsWith(MODULE_MAP_HEADER);

/** The map a source carries, or null when the source is a single ES module; throws ModuleMapError on a malformed map. */
export function decodeModuleMap(source: string): ModuleMap | null {
  if (!isModuleMapSource(source)) return null;
  const json = source.slice(MODULE_MAP_HEADER.length);
  const depth = jsonDepth(json);
  if (depth > MODULE_MAP_LIMITS.jsonDepth) throw new ModuleMapError(`the module map nests ${depth} levels deep; at most ${MODULE_MAP_LIMITS.jsonDepth}`);
  let raw: unknown;
  try { raw = JSON.parse(json); } catch (err) {
    throw new ModuleMapError(`the module map is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const r = ModuleMapSchema.safeParse(raw);
  if (!r.success) {
    throw new ModuleMapError(`the module map is invalid: ${describeIssues(r.error)}`);
  }
  return r.data;
}

/**
 * How deeply `json` nests arrays and objects (outside strings). V8's JSON.parse takes about
 * a microsecond per level of a deeply nested value, on the caller's thread: a 1 MiB source of
 * brackets would hold the agent's event loop for half a second, so depth is refused first.
 */
export function jsonDepth(json: string): number {
  let depth = 0, max = 0, inString = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (inString) {
      if (c === 92) i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 91 || c === 123) { if (++depth > max) max = depth; } else if (c === 93 || c === 125) depth--;
  }
  return max;
}

/**
 * The module an import names, resolved against the importer's directory (as a URL path would
 * be); null when it climbs out of the worker's root. Bare specifiers (no ./ or ../) are looked
 * up as names from the root, as workerd does for a module map.
 */
export function resolveModuleName(importer: string, specifier: string): string | null {
  const relative = specifier.startsWith('./') || specifier.startsWith('../');
  const base = relative ? importer.split('/').slice(0, -1) : [];
  const out = [...base];
  for (const seg of (specifier.startsWith('/') ? specifier.slice(1) : specifier).split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') { if (out.length === 0) return null; out.pop(); continue; }
    out.push(seg);
  }
  return out.length ? out.join('/') : null;
}
