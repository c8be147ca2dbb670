import type { KnipConfig } from 'knip'

// `pnpm knip`: unused files, exports and dependencies across the workspace (run in CI).
// @airi/api and @airi/db are private, so what their index exports counts only if
// someone imports it; @airi/sdk's exports are public API and are kept as they are.
const config: KnipConfig = {
  workspaces: {
    'apps/server': {
      entry: [
        'src/{main,migrate,airi}.ts',
        'scripts/*.mjs',
        'test/**/*.test.ts',
        // Run by hand (docs/performance.md).
        'test/fanout-measure/{vitest.config,fanout.measure}.ts',
      ],
      project: ['src/**/*.ts', 'test/**/*.ts', 'scripts/*.mjs'],
    },
    'apps/stage-web': {
      entry: ['scripts/*.mjs'],
      project: ['src/**/*.{ts,vue}', 'scripts/*.mjs'],
    },
    'packages/api': {
      entry: ['src/**/*.test.ts'],
      project: ['src/**/*.ts'],
      includeEntryExports: true,
    },
    'packages/db': {
      entry: ['src/**/*.test.ts'],
      project: ['src/**/*.ts'],
      includeEntryExports: true,
      // Kysely's Migrator calls each migration's up/down through migrations/index.ts.
      ignore: ['src/migrations/0*.ts'],
    },
    'packages/sdk': {
      project: ['src/**/*.ts', 'scripts/*.ts'],
      // The declarations keep zod's types as imports (tsdown.config.ts), so consumers need it.
      ignoreDependencies: ['zod'],
    },
    'tooling': {
      entry: [
        'scripts/*.ts',
        // Started as processes of their own by path (bench/load.ts, bench/scenarios/*).
        'bench/{debit-worker,fakes-process,bare-trpc,bare-ws}.ts',
        '**/*.test.ts',
        'test/{global-setup,summary-reporter}.ts',
      ],
      project: ['**/*.ts'],
    },
  },
  // Started by tooling/test/redis-server.ts; installed by the OS (.ci/run), not npm.
  ignoreBinaries: ['redis-server'],
}

export default config
