import { defineConfig } from 'vitest/config'

// Run by hand: pnpm vitest run --config apps/server/test/fanout-measure/vitest.config.ts
export default defineConfig({
  test: {
    root: new URL('../../../..', import.meta.url).pathname,
    include: ['apps/server/test/fanout-measure/*.measure.ts'],
    globalSetup: ['./tooling/test/global-setup.ts'],
    testTimeout: 600_000,
    hookTimeout: 600_000,
  },
})
