import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'

import { defineConfig } from 'vitest/config'

const BROWSER = 'apps/server/test/browser/**/*.test.ts'
const BUILD = 'apps/server/test/build.test.ts'
const SERVERS = './tooling/test/global-setup.ts'
const ROOT = import.meta.dirname

/** Every test file of the workspace, beside the code or in a package's `test/`. */
function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory())
      return entry.name === 'node_modules' || entry.name === 'dist' || entry.name.startsWith('.') ? [] : testFiles(path)
    return entry.name.endsWith('.test.ts') ? [path] : []
  })
}

// A file that reaches Postgres or Redis is an integration test: the run's (what the
// global setup provides, read by `inject` directly or through test-database.ts or the
// server harness) or one it starts itself. Every other file is a unit test. Read from
// the files, so a test moved or added lands in the right project without a list to keep.
const integration = ['apps', 'packages', 'tooling'].flatMap(dir => testFiles(join(ROOT, dir)))
  .filter(file => /\binject\(|\/test-database'|\/harness\.ts'|startEmbeddedPostgres|startRedisServer/.test(readFileSync(file, 'utf8')))
  .map(file => relative(ROOT, file))

export default defineConfig({
  test: {
    // Root options (timeouts, workers) apply to every project; reporters cover the whole run.
    reporters: ['default', './tooling/test/summary-reporter.ts'],
    // Deadlines, not speed checks: a loaded 2-core machine can be many times slower.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Most test time is spent waiting on servers, timers and subprocesses, not CPU: on
    // two cores three files at a time finish far sooner than one.
    maxWorkers: 3,
    // A test that asserts nothing passes whatever the code does. `expect.poll` waits up
    // to a deadline (vitest's own default, 1 s, is a speed check on a loaded machine).
    expect: { requireAssertions: true, poll: { timeout: 30_000, interval: 50 } },
    projects: [
      {
        extends: true,
        // No servers: `pnpm test:unit` finishes in seconds.
        test: { name: 'unit', include: ['{apps,packages,tooling}/**/*.test.ts'], exclude: ['**/node_modules/**', '**/dist/**', BROWSER, BUILD, ...integration] },
      },
      {
        extends: true,
        // The real server (or services) on Postgres and redis-server, started once for the run.
        test: { name: 'integration', include: integration, exclude: [BROWSER, BUILD], globalSetup: [SERVERS] },
      },
      {
        extends: true,
        // stage-web and the sign-in page in Chromium (playwright-core).
        test: { name: 'browser', include: [BROWSER], globalSetup: [SERVERS] },
      },
      {
        extends: true,
        // `pnpm build`, the compiled server under plain Node, and the packed SDK in a project of its own.
        // After the others (a later group): `pnpm build` rewrites apps/stage-web/dist, which
        // the browser tests serve, and a page loaded mid-rebuild finds no script.
        test: { name: 'build', include: [BUILD], globalSetup: [SERVERS], sequence: { groupOrder: 1 } },
      },
    ],
  },
})
