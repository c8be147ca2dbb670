import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['{apps,packages,tooling}/*/{src,test}/**/*.test.ts'],
    globalSetup: ['./tooling/test/global-setup.ts'],
    reporters: ['default', './tooling/test/summary-reporter.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
})
