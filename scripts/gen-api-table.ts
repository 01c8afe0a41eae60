import { readFileSync, writeFileSync } from 'node:fs';
import { API_TABLE_BEGIN, API_TABLE_END, renderApiTable } from '../test/types/api-table.js';

// Rewrites the README's API table from test/types/api-table.ts (and the gap list it reads).

const path = new URL('../README.md', import.meta.url);
const readme = readFileSync(path, 'utf8');
const start = readme.indexOf(API_TABLE_BEGIN);
const end = readme.indexOf(API_TABLE_END);
if (start < 0 || end < start) throw new Error(`README.md has no ${API_TABLE_BEGIN} ... ${API_TABLE_END} block`);
writeFileSync(path, readme.slice(0, start) + renderApiTable() + readme.slice(end + API_TABLE_END.length));
process.stdout.write('README.md: API table regenerated\n');
