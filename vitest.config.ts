import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['{apps,packages,tooling}/*/{src,test}/**/*.test.ts'],
    globalSetup: ['./tooling/test/global-setup.ts'],
    reporters: ['default', './tooling/test/summary-reporter.ts'],
    // Deadlines, not speed checks: a loaded 2-core machine can be many times slower.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Most test time is spent waiting on servers, timers and subprocesses, not CPU: on
    // two cores three files at a time finish far sooner than one.
    maxWorkers: 3,
  },
})
