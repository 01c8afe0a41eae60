import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // isolated-vm needs this on Node >= 20 (it cannot run inside Node's startup snapshot).
    execArgv: ['--no-node-snapshot'],
    pool: 'forks',
    projects: [
      {
        extends: true,
        // Real isolates and ESLint's import graph run in unit tests too; on two busy cores 5 s is tight.
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'], testTimeout: 30_000 },
      },
      {
        // The node agent on its own: real isolates, real HTTP on loopback, no control plane.
        extends: true,
        test: { name: 'agent', include: ['test/agent/**/*.test.ts'], testTimeout: 60_000, hookTimeout: 60_000 },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/harness/global-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 180_000,
        },
      },
      {
        // Issue 12's attacks, each against the real agent, operator, NATS and apiserver: the
        // attacker gets an error or loses its own isolate, a healthy neighbour keeps answering.
        extends: true,
        test: {
          name: 'security',
          include: ['test/security/**/*.test.ts'],
          globalSetup: ['test/harness/global-setup.ts'],
          testTimeout: 90_000,
          hookTimeout: 180_000,
        },
      },
      {
        // Issue 13's Jepsen-style run, short form (docs/chaos.md): a whole cluster of its own,
        // faults by real signals, a list-append history and its checker.
        extends: true,
        test: { name: 'chaos', include: ['test/chaos/**/*.test.ts'], testTimeout: 300_000, hookTimeout: 180_000 },
      },
    ],
  },
});
