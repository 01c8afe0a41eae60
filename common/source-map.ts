// A worker's exception, as its author wants to read it: the message, then the frames of the
// worker's own code (the runtime's shim frames left out), each mapped through the bundle's
// source map when `edge deploy` shipped one (an inline `sourceMappingURL=data:` comment at
// the end of the bundle; V8 ignores it). Source map v3 only needs base64 VLQ decoding and
// a search; @jridgewell/trace-mapping does the same but is not a dependency of the agent.

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_VALUE = new Map([...B64].map((c, i) => [c, i]));

/** One mapped segment: generated column, then where it came from. */
type Segment = [genCol: number, source: number, line: number, col: number];

export interface SourceMap {
  sources: string[];
  /** Per generated line (0-based), its segments sorted by generated column. */
  lines: Segment[][];
}

interface RawMap { version?: number; sources?: unknown; sourceRoot?: unknown; mappings?: unknown }

/** Decodes a v3 source map's JSON; undefined when it is not one this reads (no index maps). */
export function parseSourceMap(json: string): SourceMap | undefined {
  let raw: RawMap;
  try { raw = JSON.parse(json) as RawMap; } catch { return undefined; }
  if (raw.version !== 3 || typeof raw.mappings !== 'string' || !Array.isArray(raw.sources)) return undefined;
  const root = typeof raw.sourceRoot === 'string' && raw.sourceRoot !== '' ? raw.sourceRoot.replace(/\/?$/, '/') : '';
  const sources = raw.sources.map((s) => `${root}${String(s)}`);
  const lines: Segment[][] = [];
  let source = 0;
  let line = 0;
  let col = 0;
  for (const text of raw.mappings.split(';')) {
    const segs: Segment[] = [];
    let genCol = 0;
    for (const seg of text.split(',')) {
      if (seg === '') continue;
      const v = decodeVlq(seg);
      if (v === undefined) return undefined;
      genCol += v[0]!;
      if (v.length < 4) continue;
      source += v[1]!;
      line += v[2]!;
      col += v[3]!;
      segs.push([genCol, source, line, col]);
    }
    segs.sort((a, b) => a[0] - b[0]);
    lines.push(segs);
  }
  return { sources, lines };
}

function decodeVlq(seg: string): number[] | undefined {
  const out: number[] = [];
  let value = 0;
  let shift = 0;
  for (const c of seg) {
    const d = B64_VALUE.get(c);
    if (d === undefined) return undefined;
    value += (d & 31) << shift;
    if (d & 32) { shift += 5; continue; }
    out.push(value & 1 ? -(value >>> 1) : value >>> 1);
    value = 0;
    shift = 0;
  }
  return shift === 0 ? out : undefined;
}

/** Where 1-based `line`:`column` of the generated code came from (1-based too), or undefined. */
export function originalPosition(map: SourceMap, line: number, column: number): { source: string; line: number; column: number } | undefined {
  const segs = map.lines[line - 1];
  if (!segs || segs.length === 0) return undefined;
  // The last segment starting at or before the column.
  let lo = 0;
  let hi = segs.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (segs[mid]![0] <= column - 1) { found = mid; lo = mid + 1; } else hi = mid - 1;
  }
  const s = segs[Math.max(found, 0)]!;
  return { source: map.sources[s[1]] ?? '?', line: s[2] + 1, column: s[3] + 1 };
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
