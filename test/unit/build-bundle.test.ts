import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../cli/local/tools.js';
// @ts-expect-error scripts/build.mjs is plain JavaScript without declarations
import { pinClassNames, pinClassNamesPlugin } from '../../scripts/build.mjs';

// dist/ is one bundle with minified identifiers (scripts/build.mjs says why), so a class
// keeps its name only because the build pins it (pinClassNames): an error's `name`, the logs'
// `errorClass`, is its class's. These bundle with the same plugin and options.

const pin = pinClassNames as (source: string) => string;
const run = promisify(execFile);

describe('the bundle keeps the names of our classes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-bundle-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const bundleAndRun = async (entry: string, plugins: unknown[]) => {
    await build({
      stdin: { contents: entry, resolveDir: dir, loader: 'ts' }, bundle: true, format: 'esm', platform: 'node', target: 'node20',
      outfile: join(dir, 'out.mjs'), absWorkingDir: REPO_ROOT, logLevel: 'silent',
      minifyWhitespace: true, minifySyntax: true, minifyIdentifiers: true, plugins: plugins as never[],
    });
    return (await run(process.execPath, [join(dir, 'out.mjs')])).stdout.trim();
  };

  it('an error class keeps its name through minified identifiers, and two modules may declare the same one', async () => {
    const errorClass = 'class Base extends Error { constructor(m: string) { super(m); this.name = new.target.name; } }\nexport class WorkerLoadError extends Base {}\n';
    writeFileSync(join(dir, 'a.ts'), errorClass);
    writeFileSync(join(dir, 'b.ts'), `${errorClass}export abstract class Shape<T extends object> { abstract area(t: T): number }\nexport class Square extends Shape<{ side: number }> { area(t: { side: number }) { return t.side ** 2; } }\n`);
    const entry = 'import { WorkerLoadError as A } from "./a.ts"; import { WorkerLoadError as B, Square } from "./b.ts"; console.log(new A("x").name, new B("y").name, Square.name, new Square().area({ side: 3 }));';
    expect(await bundleAndRun(entry, [pinClassNamesPlugin])).toBe('WorkerLoadError WorkerLoadError Square 9');
    // What the plugin is for: without it the names are the minifier's.
    expect(await bundleAndRun(entry, [])).not.toContain('WorkerLoadError');
  });

  it('pins declarations only, not the word class in strings or comments', () => {
    const src = [
      "export const SOURCES = { 'cloudflare:email': 'export class EmailMessage {\\n' };",
      '// the class of errors {',
      'export default class Anything {',
      '  x = 1;',
      '}',
    ].join('\n');
    const out = pin(src);
    expect(out.match(/static \{/g)).toHaveLength(1);
    expect(out).toContain('export default class Anything { static { Object.defineProperty(this, "name", { value: "Anything", configurable: true }); }');
    expect(out).toContain("'export class EmailMessage {\\n'");
  });
});

describe('a build of dist/', () => {
  // Inside the checkout (as dist/ is), so the packages left outside the bundle resolve.
  const out = mkdtempSync(join(REPO_ROOT, '.dist-test-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  // A package can require its own files in ways esbuild cannot follow (a UMD wrapper did):
  // such a chunk fails only when some command first loads it, so load every one of them.
  it('loads every file it wrote, in a process of its own', async () => {
    await run(process.execPath, [join(REPO_ROOT, 'scripts/build.mjs'), '--quick', out], { cwd: REPO_ROOT });
    const files = readdirSync(out).filter((f) => f.endsWith('.js') && !f.endsWith('.bundle.js'));
    expect(files).toContain('edge.js');
    const script = `for (const f of ${JSON.stringify(files.map((f) => pathToFileURL(join(out, f)).href))}) await import(f);`;
    await expect(run(process.execPath, ['--no-node-snapshot', '--input-type=module', '-e', script], { cwd: out })).resolves.toBeDefined();
  }, 60_000);

  // zod schemas are ~1.6 KiB of heap each in every process that evaluates their module; the
  // front moves bytes and parses nothing, so it loads no zod (common/nats.ts builds no schema).
  it("the agent's front loads no zod", () => {
    interface Output { entryPoint?: string; inputs: Record<string, unknown>; imports: { path: string; kind: string }[] }
    const { outputs } = JSON.parse(readFileSync(join(out, 'meta.json'), 'utf8')) as { outputs: Record<string, Output> };
    const front = Object.keys(outputs).find((f) => outputs[f]!.entryPoint === 'node-agent/front.ts');
    expect(front).toBeDefined();
    // What evaluating the front's chunk evaluates: its static imports, transitively.
    const seen = new Set<string>();
    const visit = (f: string) => {
      if (seen.has(f)) return;
      seen.add(f);
      for (const i of outputs[f]!.imports) if (i.kind === 'import-statement' && outputs[basename(i.path)]) visit(basename(i.path));
    };
    visit(front!);
    const inputs = [...seen].flatMap((f) => Object.keys(outputs[f]!.inputs));
    expect(inputs).toContain('node-agent/hosts/supervisor.ts');
    expect(inputs.filter((i) => i.includes('node_modules/zod/'))).toEqual([]);
  });
});
