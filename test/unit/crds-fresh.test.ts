import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderCrdFiles } from '../../scripts/crd-files.js';
import { REPO_ROOT } from '../../cli/local/tools.js';

describe('generated CRDs', () => {
  const files = renderCrdFiles();

  it('renders every kind into crds/ and the chart', () => {
    expect([...files.keys()].sort()).toEqual([
      'charts/edge-isolates/crds/durableactors.edge.isolates.dev.yaml',
      'charts/edge-isolates/crds/edgemodels.edge.isolates.dev.yaml',
      'charts/edge-isolates/crds/edgepolicies.edge.isolates.dev.yaml',
      'charts/edge-isolates/crds/edgeworkers.edge.isolates.dev.yaml',
      'crds/durableactors.edge.isolates.dev.yaml',
      'crds/edgemodels.edge.isolates.dev.yaml',
      'crds/edgepolicies.edge.isolates.dev.yaml',
      'crds/edgeworkers.edge.isolates.dev.yaml',
    ]);
  });

  for (const [path, text] of files) {
    it(`${path} is up to date with common/api (run \`npm run gen:crds\`)`, () => {
      const onDisk = join(REPO_ROOT, path);
      expect(existsSync(onDisk), `${path} is missing`).toBe(true);
      expect(readFileSync(onDisk, 'utf8')).toBe(text);
    });
  }
});
