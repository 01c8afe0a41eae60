// A worker's exception, as its author wants to read it: the message, then the frames of the
// worker's own code (the runtime's shim frames left out), each mapped through the bundle's
// source map when `edge deploy` shipped one (an inline `sourceMappingURL=data:` comment at
// the end of the bundle; V8 ignores it). Decoding and lookup are @jridgewell/trace-mapping's
// (what vitest and Babel map stacks with).
import { TraceMap, originalPositionFor, GREATEST_LOWER_BOUND, LEAST_UPPER_BOUND } from '@jridgewell/trace-mapping';

export type SourceMap = TraceMap;

interface RawMap { version?: number; sources?: unknown; mappings?: unknown }

/** Decodes a v3 source map's JSON; undefined when it is not one or its mappings hold a character outside base64. */
export function parseSourceMap(json: string): SourceMap | undefined {
  let raw: RawMap;
  try { raw = JSON.parse(json) as RawMap; } catch { return undefined; }
  if (raw.version !== 3 || typeof raw.mappings !== 'string' || !Array.isArray(raw.sources)) return undefined;
  if (!/^[A-Za-z0-9+/,;]*$/.test(raw.mappings)) return undefined;
  try {
    // The decoder is lenient: a truncated VLQ becomes a segment without a source, which maps nothing.
    return new TraceMap(raw as ConstructorParameters<typeof TraceMap>[0]);
  } catch {
    return undefined;
  }
}

/** Where 1-based `line`:`column` of the generated code came from (1-based too), or undefined. */
export function originalPosition(map: SourceMap, line: number, column: number): { source: string; line: number; column: number } | undefined {
  const at = { line, column: column - 1 };
  // A column before the line's first segment takes that segment, as a stack column often points just before it.
  let o = originalPositionFor(map, { ...at, bias: GREATEST_LOWER_BOUND });
  if (o.source === null) o = originalPositionFor(map, { ...at, bias: LEAST_UPPER_BOUND });
  if (o.source === null || o.line === null || o.column === null) return undefined;
  return { source: o.source, line: o.line, column: o.column + 1 };
}

const INLINE_MAP = /\n\/\/# sourceMappingURL=data:application\/json;(?:charset=utf-8;)?base64,([A-Za-z0-9+/=]+)\s*$/;

/** The inline source map at the end of a bundle, decoded; undefined when it has none. */
export function inlineSourceMap(code: string): SourceMap | undefined {
  const tail = code.slice(code.lastIndexOf('\n//# sourceMappingURL='));
  const m = INLINE_MAP.exec(tail);
  return m ? parseSourceMap(Buffer.from(m[1]!, 'base64').toString('utf8')) : undefined;
}

/** A V8 stack line's location: `at f (file:L:C)` or `at file:L:C`. */
const FRAME = /^(\s*at (?:.*? \()?)(.*?):(\d+):(\d+)(\)?)$/;

/** The runtime's own frames, never the worker author's. */
const RUNTIME_FRAME = /edge-shim\.js|<isolated-vm|^\s*at (?:node:|cloudflare:)|\(node:|\(cloudflare:/;

/**
 * Splits V8's text of an error ("TypeError: x\n    at f (worker:ns/name.js:2:9)...") into
 * its message and the worker's own frames; `map`, when given, rewrites each frame of
 * `file` to its original source.
 */
export function workerStack(text: string, file?: string, map?: SourceMap): { message: string; stack: string } {
  const lines = text.split('\n');
  const first = lines.findIndex((l) => /^\s+at /.test(l));
  const message = (first < 0 ? lines : lines.slice(0, first)).join('\n');
  const frames = first < 0 ? [] : lines.slice(first);
  const kept: string[] = [];
  for (const f of frames) {
    if (RUNTIME_FRAME.test(f)) continue;
    const m = FRAME.exec(f);
    if (m && map && (file === undefined || m[2] === file)) {
      const o = originalPosition(map, Number(m[3]), Number(m[4]));
      if (o) { kept.push(`    ${m[1]!.trim()}${o.source}:${o.line}:${o.column}${m[5]}`); continue; }
    }
    kept.push(`    ${f.trim()}`);
  }
  return { message, stack: kept.join('\n') };
}
