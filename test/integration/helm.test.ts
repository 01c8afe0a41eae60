import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { sharedControlPlane } from '../harness/shared.js';
import { REPO_ROOT, toolPath } from '../harness/tools.js';

const run = promisify(execFile);
const chart = join(REPO_ROOT, 'charts/edge-isolates');

describe('helm (built from source) against the harness apiserver', () => {
  const { kubeconfigPath } = sharedControlPlane();
  const helm = (...args: string[]) => run(toolPath('helm'), args, { env: { ...process.env, KUBECONFIG: kubeconfigPath, HELM_CACHE_HOME: join(REPO_ROOT, 'node_modules/.cache/helm') } });

  it('lints the chart with no warnings', async () => {
    const { stdout } = await helm('lint', '--strict', chart);
    expect(stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    expect(stdout).not.toMatch(/\[WARNING\]/);
  });

  it('installs the chart: the apiserver reports a real version, so kubeVersion checks pass', async () => {
    const { stdout } = await helm('install', 'edge', chart, '--namespace', 'default', '--skip-crds', '--wait', '--timeout', '60s');
    expect(stdout).toMatch(/STATUS: deployed/);
    const { stdout: list } = await helm('list', '--namespace', 'default', '-o', 'json');
    expect(JSON.parse(list)).toEqual([expect.objectContaining({ name: 'edge', status: 'deployed' })]);
  });
});
