import { performance } from 'node:perf_hooks'

import { findFreePort } from '@airi/db'

import type { Scenario } from '../context.ts'
import { ready, serverEnv, spawnTracked, until } from '../infra.ts'
import { formatSummary, summarize } from '../stats.ts'

/**
 * The README's `pnpm start`, timed from spawn to the first 200 from /readyz. The
 * first start (which may build stage-web) is not counted: each measured start is
 * a second start, with the build fresh and the database migrated.
 */
export const coldStart: Scenario = {
  name: 'cold-start',
  // A first start may build stage-web: too slow for CI's quick run.
  quick: false,
  async run(context) {
    const startOnce = async () => {
      const port = await findFreePort()
      const started = performance.now()
      const { child, stop } = spawnTracked('pnpm', ['start'], {
        cwd: context.serverRoot,
        env: serverEnv({ ...context.serverOptions }, port),
        logFile: context.serverOptions.logFile.replace(/\.log$/, '-cold-start.log'),
      })
      let exited = false
      child.once('exit', () => (exited = true))
      try {
        await until(async () => {
          if (exited)
            throw new Error('pnpm start exited before /readyz answered')
          return ready(`http://127.0.0.1:${port}`)
        }, 'pnpm start to be ready', 300_000)
        return performance.now() - started
      }
      finally {
        await stop()
      }
    }
    await startOnce()
    const times: number[] = []
    for (let round = 0; round < context.rounds; round++) {
      times.push(await startOnce())
      context.log(`cold-start round ${round + 1}: ${Math.round(times.at(-1)!)} ms`)
    }
    const summary = summarize(times.map(ms => ms / 1000))
    return [{
      scenario: 'cold-start',
      metric: 'second `pnpm start` to /readyz 200',
      baseline: '—',
      ours: formatSummary(summary, 's'),
      ratio: '—',
      target: '≤ 1.5 s',
      met: summary.median <= 1.5,
      data: { seconds: summary },
    }]
  },
}
