import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// The comparison table (markdown on stdout) and the JSON record in bench/results/.

export type Unit = 'req/s' | 'ms' | 'MiB' | 's' | 'per s' | 'per min' | '%' | 'x' | 'count' | 'per CPU-s' | 'cores';

export const NOT_APPLICABLE = 'not applicable';

/** A peer's number for one metric, or why there is none. */
export type Cell = { value: number } | { error: string } | { skipped: string };

export interface Floor {
  /** e.g. "ratio >= 1.0" or "agent p50 <= 5 ms" */
  text: string;
  check: (agent: number | undefined, ratio: number | undefined) => boolean;
}

export interface Row {
  metric: string;
  unit: Unit;
  better: 'higher' | 'lower' | 'info';
  agent: Cell;
  workerd: Cell;
  floor?: Floor;
}

export interface RowOut {
  metric: string;
  unit: Unit;
  better: string;
  agent: number | null;
  workerd: number | null;
  agentError?: string;
  workerdError?: string;
  ratio: number | null;
  floor?: string;
  floorMet?: boolean | null;
}

const val = (c: Cell): number | undefined => ('value' in c && Number.isFinite(c.value) ? c.value : undefined);

export function fmt(v: number, unit: Unit): string {
  if (unit === 'req/s') return `${Math.round(v).toLocaleString('en-US')} req/s`;
  if (unit === 'ms') return `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms`;
  if (unit === 'MiB') return `${v.toFixed(2)} MiB`;
  if (unit === 'per s') return `${Math.round(v).toLocaleString('en-US')} /s`;
  if (unit === 'per min') return `${Math.round(v).toLocaleString('en-US')} /min`;
  if (unit === '%') return `${v >= 99 ? v.toFixed(3) : v.toFixed(2)} %`;
  if (unit === 'x') return Number.isFinite(v) ? `${v.toFixed(2)}x` : 'inf';
  if (unit === 'count') return Math.round(v).toLocaleString('en-US');
  if (unit === 'per CPU-s') return `${Math.round(v).toLocaleString('en-US')} /CPU-s`;
  if (unit === 'cores') return `${v.toFixed(2)} cores`;
  return `${v.toFixed(2)} s`;
}

function cellText(c: Cell, unit: Unit): string {
  if ('value' in c) return Number.isFinite(c.value) ? fmt(c.value, unit) : 'n/a';
  if ('error' in c) return 'ERROR';
  return c.skipped === NOT_APPLICABLE ? 'n/a' : 'skipped';
}

export function evaluate(rows: Row[]): RowOut[] {
  return rows.map((r) => {
    const a = val(r.agent);
    const w = val(r.workerd);
    const ratio = a !== undefined && w !== undefined && w !== 0 ? a / w : undefined;
    const out: RowOut = {
      metric: r.metric, unit: r.unit, better: r.better, agent: a ?? null, workerd: w ?? null, ratio: ratio ?? null,
    };
    if ('error' in r.agent) out.agentError = r.agent.error;
    if ('error' in r.workerd) out.workerdError = r.workerd.error;
    if (r.floor) {
      out.floor = r.floor.text;
      const needsRatio = r.floor.text.startsWith('ratio');
      out.floorMet = a === undefined || (needsRatio && ratio === undefined) ? null : r.floor.check(a, ratio);
    }
    return out;
  });
}

export function markdownTable(rows: Row[], evaluated: RowOut[]): string {
  const lines = [
    '| metric | agent | workerd | agent/workerd | better | floor |',
    '|---|---:|---:|---:|---|---|',
  ];
  rows.forEach((r, i) => {
    const e = evaluated[i];
    if (!e) return;
    const ratio = e.ratio === null ? '-' : `${e.ratio.toFixed(2)}x`;
    const better = r.better === 'info' ? 'info' : r.better === 'higher' ? 'higher is better' : 'lower is better';
    const floor = e.floor === undefined ? '' : `${e.floor}: ${e.floorMet === null || e.floorMet === undefined ? 'not measured' : e.floorMet ? '**met**' : '**MISSED**'}`;
    lines.push(`| ${r.metric} | ${cellText(r.agent, r.unit)} | ${cellText(r.workerd, r.unit)} | ${ratio} | ${better} | ${floor} |`);
  });
  return lines.join('\n');
}

/** The errors and skips behind the table's ERROR/skipped cells, one line each, deduplicated. */
export function problems(rows: Row[]): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const r of rows) {
    for (const [peer, c] of [['agent', r.agent], ['workerd', r.workerd]] as const) {
      const msg = 'error' in c ? `ERROR ${c.error}` : 'skipped' in c && c.skipped !== NOT_APPLICABLE ? `skipped: ${c.skipped}` : undefined;
      if (!msg) continue;
      const key = `${peer}: ${msg}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push(`- ${peer} (${r.metric}): ${msg.length > 1500 ? `${msg.slice(0, 1500)}...` : msg}`);
    }
  }
  return out;
}

const RESULTS = join(dirname(fileURLToPath(import.meta.url)), 'results');

/**
 * Writes results/<prefix><ISO timestamp>.json and results/<prefix>latest.json; returns the
 * first path. The soak uses the prefix `soak-`, so its record never replaces the bench's latest.
 */
export function writeResults(record: Record<string, unknown>, startedAt: Date, prefix = ''): string {
  mkdirSync(RESULTS, { recursive: true });
  const text = `${JSON.stringify(record, null, 2)}\n`;
  const file = join(RESULTS, `${prefix}${startedAt.toISOString().replace(/:/g, '-')}.json`);
  writeFileSync(file, text);
  const tmp = join(RESULTS, `${prefix}latest.json.tmp`);
  writeFileSync(tmp, text);
  renameSync(tmp, join(RESULTS, `${prefix}latest.json`));
  return file;
}
