import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // isolated-vm needs this on Node >= 20 (it cannot run inside Node's startup snapshot).
    execArgv: ['--no-node-snapshot'],
    pool: 'forks',
    projects: [
      {
        extends: true,
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'] },
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
    ],
  },
});
