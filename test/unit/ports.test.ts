import { describe, expect, it } from 'vitest';
import { freePort } from '../../cli/local/ports.js';

// The local cluster picks its ports at random below the ephemeral range, and its components
// bind them later: a port must not be handed out twice in between.

describe('freePort', () => {
  it('does not hand a port out again while its first caller may not have bound it yet', async () => {
    // One after another: each is free again when the next is drawn, as etcd's ports are
    // until etcd binds them. 800 draws from 12,000 ports would repeat some 25 times.
    const ports: number[] = [];
    for (let i = 0; i < 400; i++) ports.push(await freePort());
    ports.push(...await Promise.all(Array.from({ length: 400 }, () => freePort())));
    expect(new Set(ports).size).toBe(ports.length);
    for (const p of ports) expect(p).toBeGreaterThanOrEqual(20_000);
  });
});
