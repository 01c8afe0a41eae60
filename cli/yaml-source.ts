import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { isScalar, LineCounter, parseAllDocuments, type Scalar } from 'yaml';

// An inline worker (spec.source.inline in a YAML manifest) is compiled as
// `worker:<namespace>/<name>.js`, so V8 names positions in that made-up file. Its author
// wrote a YAML file: these helpers find the manifest that declares the worker and turn a
// position in the inline source into one in the YAML file, with a code frame, for `edge dev`
// (a refused bundle, an uncaught exception) and `edge logs`.

const MANIFEST = /\.(ya?ml)$/;

/** Where an inline worker's source starts in its manifest: line 1 of the source is YAML line `line + 1`, columns shifted by `indent`. */
export interface InlineOrigin {
  file: string;
  /** The YAML file's lines (for code frames). */
  lines: string[];
  /** 0-based YAML line of the source's first line. */
  line: number;
  /** Columns of indentation (a block scalar), or the column the quoted value starts at. */
  indent: number;
}

/** The inline source of EdgeWorker `namespace/name` among the manifests of `dir`, if one declares it. */
export function findInlineWorker(dir: string, namespace: string, name: string): InlineOrigin | undefined {
  let files: string[];
  try { files = readdirSync(dir).filter((f) => MANIFEST.test(f)).sort(); } catch { return undefined; }
  for (const f of files) {
    let text: string;
    try { text = readFileSync(join(dir, f), 'utf8'); } catch { continue; }
    if (!text.includes(name)) continue;
    const o = inlineOrigin(join(dir, f), text, namespace, name);
    if (o) return o;
  }
  return undefined;
}

export function inlineOrigin(file: string, text: string, namespace: string, name: string): InlineOrigin | undefined {
  const lc = new LineCounter();
  let docs;
  try { docs = parseAllDocuments(text, { lineCounter: lc }); } catch { return undefined; }
  if (!Array.isArray(docs)) return undefined;
  for (const doc of docs) {
    const o = doc.toJSON() as { kind?: string; metadata?: { name?: string; namespace?: string } } | null;
    if (o?.kind !== 'EdgeWorker' || o.metadata?.name !== name || (o.metadata.namespace ?? 'default') !== namespace) continue;
    const node = doc.getIn(['spec', 'source', 'inline'], true);
    if (!isScalar(node) || !node.range) return undefined;
    const lines = text.split('\n');
    const at = lc.linePos(node.range[0]);
    const s = node as Scalar;
    if (s.type === 'BLOCK_LITERAL' || s.type === 'BLOCK_FOLDED') {
      // Content starts on the line after the indicator; its indentation is that of its first non-empty line.
      const first = lines.slice(at.line).find((l) => l.trim() !== '') ?? '';
      return { file, lines, line: at.line, indent: first.length - first.trimStart().length };
    }
    // A quoted or plain one-line value: columns from where it starts (escapes aside).
    return { file, lines, line: at.line - 1, indent: at.col - 1 + (s.type === 'QUOTE_DOUBLE' || s.type === 'QUOTE_SINGLE' ? 1 : 0) };
  }
  return undefined;
}

/** 1-based YAML line and column of 1-based `line`:`column` of the inline source. */
export function yamlPosition(o: InlineOrigin, line: number, column: number): { line: number; column: number } {
  return { line: o.line + line, column: column + o.indent };
}

/** A code frame: the lines around `line` (1-based) with a marker and a caret under `column`. */
export function codeFrame(lines: string[], line: number, column: number, context = 2): string {
  const from = Math.max(1, line - context);
  const to = Math.min(lines.length, line + context);
  const width = String(to).length;
  const out: string[] = [];
  for (let n = from; n <= to; n++) {
    out.push(`${n === line ? '>' : ' '} ${String(n).padStart(width)} | ${lines[n - 1] ?? ''}`);
    if (n === line) out.push(`  ${' '.repeat(width)} | ${' '.repeat(Math.max(0, column - 1))}^`);
  }
  return out.join('\n');
}

const GENERATED = /worker:([a-z0-9-]+)\/([a-z0-9-]+)\.js:(\d+):(\d+)/g;

/**
 * Rewrites every `worker:<ns>/<name>.js:L:C` in `text` to the YAML file and line of the
 * manifest in `dir` that declares that inline worker; returns the text and, for the first
 * position rewritten, a code frame.
 */
export function mapInlinePositions(text: string, dir: string, cwd = process.cwd()): { text: string; frame?: string } {
  const origins = new Map<string, InlineOrigin | undefined>();
  let frame: string | undefined;
  const mapped = text.replace(GENERATED, (whole, ns: string, name: string, l: string, c: string) => {
    const k = `${ns}/${name}`;
    if (!origins.has(k)) origins.set(k, findInlineWorker(dir, ns, name));
    const o = origins.get(k);
    if (!o) return whole;
    const p = yamlPosition(o, Number(l), Number(c));
    frame ??= codeFrame(o.lines, p.line, p.column);
    const rel = relative(cwd, o.file);
    return `${rel.startsWith('..') ? o.file : rel}:${p.line}:${p.column}`;
  });
  return { text: mapped, ...(frame !== undefined ? { frame } : {}) };
}
