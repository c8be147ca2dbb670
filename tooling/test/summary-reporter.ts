import type { Reporter, TestModule } from 'vitest/node'

/** Ends the run with one plain `N passed, N failed, N skipped` line that CI tooling can read. */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const counts = { passed: 0, failed: 0, skipped: 0 }
    for (const module of testModules) {
      let testsFailed = 0
      for (const test of module.children.allTests()) {
        const state = test.result().state
        if (state === 'passed' || state === 'failed' || state === 'skipped')
          counts[state]++
        if (state === 'failed')
          testsFailed++
      }
      // A file that failed outside its tests (an import, a beforeAll whose failure
      // skipped every test) is one failure, not a clean run with skips.
      if (module.state() === 'failed' && testsFailed === 0)
        counts.failed++
    }
    process.stdout.write(`\nsummary: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped\n`)
  }
}
