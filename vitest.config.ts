import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // build-dist first: tests spawn bin/lethe.js, which runs dist/, compiled from the current sources.
    globalSetup: ['test/helpers/build-dist.ts', 'test/helpers/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 3,
    reporters: ['default'],
  },
});
