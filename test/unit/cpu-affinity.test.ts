import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { allowedCpus, hostCpuPlan } from '../../node-agent/hosts/cpu-affinity.js';

describe('hostCpuPlan', () => {
  it('auto pins host i to the i-th allowed CPU when there is a host for every CPU', () => {
    expect(hostCpuPlan('auto', 2, [0, 1])).toEqual([0, 1]);
    expect(hostCpuPlan('auto', 3, [2, 5])).toEqual([2, 5, 2]);
    // One CPU (a pod with a one-core cpuset, the bench's pinned server): every host on it.
    expect(hostCpuPlan('auto', 2, [1])).toEqual([1, 1]);
  });

  it('auto leaves the hosts unpinned when there are more CPUs than hosts', () => {
    expect(hostCpuPlan('auto', 2, [0, 1, 2, 3])).toBeUndefined();
  });

  it('on pins whatever the counts; off never pins', () => {
    expect(hostCpuPlan('on', 2, [0, 1, 2, 3])).toEqual([0, 1]);
    expect(hostCpuPlan('off', 2, [0, 1])).toBeUndefined();
  });

  it('pins nothing without hosts or without a CPU list (not Linux)', () => {
    expect(hostCpuPlan('on', 0, [0, 1])).toBeUndefined();
    expect(hostCpuPlan('on', 2, undefined)).toBeUndefined();
    expect(hostCpuPlan('on', 2, [])).toBeUndefined();
  });
});

describe('allowedCpus', () => {
  it('reads Cpus_allowed_list from a status file', () => {
    const f = join(mkdtempSync(join(tmpdir(), 'cpus-')), 'status');
    writeFileSync(f, 'Name:\tnode\nCpus_allowed:\t0000000d\nCpus_allowed_list:\t0,2-3\nMems_allowed_list:\t0\n');
    expect(allowedCpus(f)).toEqual([0, 2, 3]);
  });

  it('is undefined without the file or the line', () => {
    expect(allowedCpus('/nonexistent/status')).toBeUndefined();
    const f = join(mkdtempSync(join(tmpdir(), 'cpus-')), 'status');
    writeFileSync(f, 'Name:\tnode\n');
    expect(allowedCpus(f)).toBeUndefined();
  });

  it('reads this process on Linux', () => {
    expect(allowedCpus()?.length).toBeGreaterThan(0);
  });
});
