import { execFile, execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../cli/local/control-plane.js';
import { REPO_ROOT, toolPath } from '../../cli/local/tools.js';
import { waitFor } from '../../cli/local/ports.js';
import { KubeClient } from '../../operator/runtime/kube-client.js';
import { CHART_DIR } from '../harness/chart.js';

// The README's "Install with Helm" section, run as written: its shell block (less the
// `docker build` lines: no Docker here, and with no kubelet no image is ever pulled) with the
// project's helm, its multi-region values as my-regions.yaml, into a control plane of its
// own (the README's release name and namespace would collide with chart-install's on the
// shared one), with the real NATS chart. Read from README.md, so an edit there is what runs.

const run = promisify(execFile);

/** A section's fenced blocks of one language, from `## title` to the next `## `. */
function readmeBlocks(title: string, lang: string): string[] {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf(`\n## ${title}\n`);
  if (start < 0) throw new Error(`README.md has no "## ${title}" section`);
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(new RegExp('^```' + lang + '\\n([\\s\\S]*?)^```', 'gm'))].map((m) => m[1]!);
}

/** Shell commands of a block: continuations joined, comment lines dropped. */
function commands(block: string): string[] {
  return block.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
}

describe("the README's Helm section, verbatim, against a real apiserver", () => {
  const SECTION = 'Install with Helm';
  const sh = readmeBlocks(SECTION, 'sh')[0] ?? '';
  const values = readmeBlocks(SECTION, 'yaml')[0] ?? '';
  const root = mkdtempSync(join(tmpdir(), 'edge-readme-helm-'));
  let cp: ControlPlane;
  let kube: KubeClient;
  let env: NodeJS.ProcessEnv;
  let output = '';

  beforeAll(async () => {
    cp = await startControlPlane({ nats: false });
    kube = new KubeClient(cp.kubeConfig);
    // What the commands use of a checkout (charts/ without a packaged dependency, so the
    // build is what puts it there); they run in this copy so the build writes nothing into
    // the repository the other chart tests copy from.
    cpSync(join(REPO_ROOT, 'charts'), join(root, 'charts'), { recursive: true, filter: (src) => src !== join(CHART_DIR, 'charts') });
    for (const f of ['scripts/tools.sh', 'tools/versions.env']) {
      mkdirSync(join(root, f, '..'), { recursive: true });
      cpSync(join(REPO_ROOT, f), join(root, f));
    }
    writeFileSync(join(root, 'my-regions.yaml'), values);
    const helmHome = join(root, '.helm');
    env = {
      ...process.env, KUBECONFIG: cp.kubeconfigPath, KUBECACHEDIR: join(helmHome, 'kube-cache'),
      HELM_CACHE_HOME: join(helmHome, 'cache'), HELM_CONFIG_HOME: join(helmHome, 'config'), HELM_DATA_HOME: join(helmHome, 'data'),
    };
  }, 120_000);
  afterAll(async () => {
    await cp?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it('the section has the commands and values this test runs', () => {
    const cmds = commands(sh);
    expect(cmds.filter((c) => c.startsWith('helm ')).map((c) => c.split(/\s+/).slice(0, 3).join(' '))).toEqual(['helm dependency build', 'helm install edge-isolates']);
    expect(values).toMatch(/^regions:/m);
  });

  it('runs as written: helm dependency build offline, then helm install of the multi-region values', async () => {
    const script = [
      ...commands(sh).filter((c) => !c.startsWith('docker ')),
      // Not from the README: which helm those commands ran.
      'echo "HELM_USED=$(readlink -f "$(command -v helm)")"',
    ].join('\n');
    try {
      const r = await run('bash', ['-euo', 'pipefail', '-c', script], { cwd: root, env, maxBuffer: 16 * 1024 * 1024, timeout: 120_000 });
      output = r.stdout + r.stderr;
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new Error(`the README's commands failed:\n${script}\n---\n${e.stdout ?? ''}${e.stderr ?? e.message}`);
    }
    expect(output).toContain(`HELM_USED=${realpathSync(toolPath('helm'))}`);
    expect(output).toMatch(/STATUS: deployed/);
    // No Prometheus Operator on this cluster: the ServiceMonitor the values ask for is
    // skipped (instead of failing the install), and the notes say so.
    expect(output).toMatch(/no ServiceMonitor was created/);
  });

  it('helm dependency build left only the packaged NATS chart, which git ignores, and Chart.lock as committed', () => {
    const vendored = /^version: (\S+)$/m.exec(readFileSync(join(REPO_ROOT, 'charts/nats/Chart.yaml'), 'utf8'))?.[1];
    expect(readdirSync(join(root, 'charts/edge-isolates/charts'))).toEqual([`nats-${vendored}.tgz`]);
    execFileSync('git', ['-C', REPO_ROOT, 'check-ignore', '-q', '--no-index', `charts/edge-isolates/charts/nats-${vendored}.tgz`]);
    expect(readFileSync(join(root, 'charts/edge-isolates/Chart.lock'), 'utf8')).toBe(readFileSync(join(CHART_DIR, 'Chart.lock'), 'utf8'));
  });

  it('created the CRDs, the agents of the three regions and NATS from the real NATS chart', async () => {
    const crds = await kube.request<{ items: { metadata: { name: string } }[] }>('GET', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions');
    expect(crds.items.map((c) => c.metadata.name)).toEqual(expect.arrayContaining(['edgeworkers.edge.isolates.dev', 'durableactors.edge.isolates.dev']));
    const ds = await kube.request<{ items: { metadata: { name: string } }[] }>('GET', '/apis/apps/v1/namespaces/edge-system/daemonsets');
    expect(ds.items.map((d) => d.metadata.name).sort()).toEqual(['ap-south', 'eu-west', 'us-east'].map((r) => `edge-isolates-agent-${r}`));
    const sts = await kube.request<{ spec: { replicas: number; template: { spec: { containers: { image: string }[] } } } }>('GET', '/apis/apps/v1/namespaces/edge-system/statefulsets/edge-isolates-nats');
    expect(sts.spec.replicas).toBe(3);
    expect(sts.spec.template.spec.containers[0]!.image).toMatch(/^nats:/);
  });

  it('creates the ServiceMonitor once the cluster has the Prometheus Operator\'s CRD', async () => {
    // Only the CRD (not the Prometheus Operator): what Capabilities.APIVersions looks for.
    await kube.request('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', {
      body: {
        apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition',
        metadata: { name: 'servicemonitors.monitoring.coreos.com' },
        spec: {
          group: 'monitoring.coreos.com', scope: 'Namespaced',
          names: { plural: 'servicemonitors', singular: 'servicemonitor', kind: 'ServiceMonitor', listKind: 'ServiceMonitorList' },
          versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } } }],
        },
      },
    });
    await waitFor('ServiceMonitor API served', async () => {
      try { await kube.request('GET', '/apis/monitoring.coreos.com/v1/namespaces/edge-system/servicemonitors'); return true; } catch { return false; }
    }, 30_000, 200);
    const { stdout } = await run(toolPath('helm'), ['upgrade', 'edge-isolates', 'charts/edge-isolates', '-n', 'edge-system', '--set', 'image.registry=registry.example.com', '-f', 'my-regions.yaml'], { cwd: root, env });
    expect(stdout).not.toMatch(/no ServiceMonitor was created/);
    const sm = await kube.request<{ metadata: { labels: Record<string, string> } }>('GET', '/apis/monitoring.coreos.com/v1/namespaces/edge-system/servicemonitors/edge-isolates');
    expect(sm.metadata.labels).toMatchObject({ release: 'prometheus' });
  });
});
