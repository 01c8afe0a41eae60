import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../cli/local/tools.js';

// scripts/npm-progress.mjs, what `make dev` and `make test` show while `npm ci` runs (it was
// four silent minutes): fed the output of an `npm ci --foreground-scripts` that compiles a
// native module, it says each phase and each compiled file, passes errors through and keeps
// everything in the log. (The real npm ci is not run here: it takes minutes of both cores.)

describe('npm-progress.mjs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-progress-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('turns npm and node-gyp output into progress lines, and logs all of it', () => {
    mkdirSync(join(dir, 'node_modules/isolated-vm'), { recursive: true });
    writeFileSync(join(dir, 'node_modules/isolated-vm/binding.gyp'), "{ 'sources': [ 'src/a.cc', 'src/b.cc', 'src/c.cc' ], 'x': [ 'src/a.cc' ] }");
    const npmOutput = [
      '> esbuild@0.28.2 postinstall', '> node install.js',
      '> isolated-vm@5.0.4 install', '> prebuild-install || (node-gyp rebuild --release -j max && node-gyp clean)',
      'gyp info it worked if it ends with ok', 'make: Entering directory',
      '  CXX(target) Release/obj.target/isolated_vm/src/a.o', '  CXX(target) Release/obj.target/isolated_vm/src/b.o',
      '../src/c.cc:12:3: error: no member named x', 'make: *** [isolated_vm.target.mk:140] Error 1',
      '  SOLINK_MODULE(target) Release/isolated_vm.node', 'added 412 packages in 3m',
    ].join('\n') + '\n';
    const log = join(dir, 'npm.log');
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'scripts/npm-progress.mjs'), log], { cwd: dir, input: npmOutput, encoding: 'utf8' });
    expect(r.status).toBe(0);
    const lines = r.stderr.trim().split('\n').map((l) => l.replace(/ \(\d+s\)$/, ''));
    expect(lines).toEqual([
      '[setup]   fetching and unpacking packages',
      '[setup]   running the postinstall script of esbuild',
      '[setup]   running the install script of isolated-vm: node-gyp compiles it from C++ (the long part: about 3-4 minutes on 2 cores)',
      '[setup]   isolated-vm: compiled a (1 of about 3 files)',
      '[setup]   isolated-vm: compiled b (2 of about 3 files)',
      '../src/c.cc:12:3: error: no member named x',
      'make: *** [isolated_vm.target.mk:140] Error 1',
      '[setup]   linking isolated-vm',
      'added 412 packages in 3m',
    ]);
    expect(readFileSync(log, 'utf8')).toBe(npmOutput);
  });
});
