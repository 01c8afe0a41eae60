import { afterAll, describe, expect, it } from 'vitest';
import { helm, preparedChart } from '../harness/chart.js';
import { sharedControlPlane } from '../harness/shared.js';

// helm itself (built from source) against the harness apiserver, with the chart's defaults.
// The chart in detail: chart-template, chart-install and chart-rbac.test.ts.

describe('helm (built from source) against the harness apiserver', () => {
  const { kubeconfigPath } = sharedControlPlane();
  // The chart with its NATS dependency in charts/, as `helm dependency build` leaves it.
  const chart = preparedChart();
  afterAll(() => chart.cleanup());

  it('lints the chart with no warnings', async () => {
    const { stdout } = await helm(['lint', '--strict', chart.dir]);
    expect(stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    expect(stdout).not.toMatch(/\[WARNING\]/);
  });

  it('installs the chart: the apiserver reports a real version, so kubeVersion checks pass', async () => {
    // No --wait: no controller-manager or kubelet runs here, so the operator's pods never exist.
    const { stdout } = await helm(['install', 'edge', chart.dir, '--namespace', 'default', '--skip-crds', '--timeout', '60s'], kubeconfigPath);
    expect(stdout).toMatch(/STATUS: deployed/);
    const { stdout: list } = await helm(['list', '--namespace', 'default', '-o', 'json'], kubeconfigPath);
    expect(JSON.parse(list)).toEqual([expect.objectContaining({ name: 'edge', status: 'deployed' })]);
  });
});
