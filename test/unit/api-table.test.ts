import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { API_ROWS, API_TABLE_BEGIN, API_TABLE_END, missingMembers, renderApiTable, rowState } from '../types/api-table.js';
import { WORKERS_API, type WorkersApiName } from '../types/workers-api.js';

// The README's API table is what test/types/api-table.ts renders from the gap list, so the
// state column cannot claim an API the isolate check (workers-types.test.ts) finds missing.

const ROOT = new URL('../../', import.meta.url);

describe('the README API table', () => {
  it('is exactly what npm run gen:api-table renders', () => {
    const readme = readFileSync(new URL('README.md', ROOT), 'utf8');
    const start = readme.indexOf(API_TABLE_BEGIN);
    const end = readme.indexOf(API_TABLE_END);
    expect(start, 'README.md has the generated block').toBeGreaterThan(0);
    // Run `npm run gen:api-table` after changing test/types/api-table.ts or workers-api.ts.
    expect(readme.slice(start, end + API_TABLE_END.length)).toBe(renderApiTable());
  });

  it('puts every measured type and every missing global in exactly one row', () => {
    const typeRows = new Map<string, string[]>();
    const globalRows = new Map<string, string[]>();
    for (const row of API_ROWS) {
      for (const t of row.types) typeRows.set(t, [...(typeRows.get(t) ?? []), row.api]);
      for (const g of row.globals) globalRows.set(g, [...(globalRows.get(g) ?? []), row.api]);
    }
    const types: string[] = Object.keys(WORKERS_API).filter((t) => t !== 'globalThis');
    expect(types.filter((t) => typeRows.get(t)?.length !== 1), 'types in no row or in several').toEqual([]);
    expect([...typeRows.keys()].filter((t) => !types.includes(t)), 'rows naming unknown types').toEqual([]);
    const globals = WORKERS_API.globalThis as readonly string[];
    expect(globals.filter((g) => globalRows.get(g)?.length !== 1), 'missing globals in no row or in several').toEqual([]);
    expect([...globalRows.keys()].filter((g) => !globals.includes(g)), 'rows naming globals that are not missing').toEqual([]);
  });

  it('names test files that exist, for every row that claims something', () => {
    for (const row of API_ROWS) {
      if (!row.absent) expect(row.tests.length, row.api).toBeGreaterThan(0);
      for (const t of row.tests) expect(existsSync(new URL(t, ROOT)), `${row.api}: ${t}`).toBe(true);
    }
  });

  it('derives the state from the gaps: a row with a listed gap is never "there"', () => {
    for (const row of API_ROWS) {
      if (missingMembers(row).length > 0) expect(rowState(row), row.api).not.toBe('there');
    }
    const fake = { api: 'x', types: ['Request'] as WorkersApiName[], globals: [], there: '', tests: [] };
    expect(rowState(fake)).toBe((WORKERS_API.Request as readonly string[]).length ? 'partial' : 'there');
  });
});
