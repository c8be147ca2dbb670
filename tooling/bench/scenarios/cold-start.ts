import { performance } from 'node:perf_hooks'

import { findFreePort } from '@airi/db'

import type { BenchContext, Scenario } from '../context.ts'
import { ready, serverEnv, spawnTracked, until } from '../infra.ts'
import { formatNumber, formatSummary, ratio, summarize } from '../stats.ts'

/**
 * The baseline: plain `node` importing the checkout's own Fastify (resolved from
 * apps/server) and answering /readyz, started like the server (its own process,
 * the same environment), with no pnpm, bundle, database or Redis.
 */
const BARE_FASTIFY = `
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
const fromServer = createRequire(join(process.cwd(), 'apps/server/package.json'))
const { default: Fastify } = await import(pathToFileURL(fromServer.resolve('fastify')).href)
const app = Fastify({ logger: false })
app.get('/readyz', async () => ({ ok: true }))
await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT) })
process.on('SIGTERM', () => void app.close().finally(() => process.exit(0)))
`

/** Spawn → the first 200 from /readyz of `command`, started on a free port in the server's environment (ms). */
async function timeToReady(context: BenchContext, command: string, args: string[], log: string): Promise<number> {
  const port = await findFreePort()
  const started = performance.now()
  const { child, stop } = spawnTracked(command, args, {
    cwd: context.serverRoot,
    env: serverEnv({ ...context.serverOptions }, port),
    logFile: context.serverOptions.logFile.replace(/\.log$/, `-${log}.log`),
  })
  let exited = false
  child.once('exit', () => (exited = true))
  try {
    await until(async () => {
      if (exited)
        throw new Error(`${command} ${args[0]} exited before /readyz answered`)
      return ready(`http://127.0.0.1:${port}`)
    }, `${command} ${args[0]} to be ready`, 300_000)
    return performance.now() - started
  }
  finally {
    await stop()
  }
}

/**
 * The README's `pnpm start`, timed from spawn to the first 200 from /readyz,
 * paired round by round with a bare Fastify's start. The first start (which may
 * build stage-web) is not counted: each measured start is a second start, with the
 * build fresh and the database migrated.
 */
export const coldStart: Scenario = {
  name: 'cold-start',
  // A first start may build stage-web: too slow for CI's quick run.
  quick: false,
  async run(context) {
    const startBare = () => timeToReady(context, process.execPath, ['--input-type=module', '-e', BARE_FASTIFY], 'bare-fastify')
    const startOurs = () => timeToReady(context, 'pnpm', ['start'], 'cold-start')
    await startBare()
    await startOurs()
    const bare: number[] = []
    const ours: number[] = []
    for (let round = 0; round < context.rounds; round++) {
      bare.push(await startBare())
      ours.push(await startOurs())
      context.log(`cold-start round ${round + 1}: bare Fastify ${Math.round(bare.at(-1)!)} ms, pnpm start ${Math.round(ours.at(-1)!)} ms`)
    }
    const baseline = summarize(bare.map(ms => ms / 1000))
    const summary = summarize(ours.map(ms => ms / 1000))
    return [{
      scenario: 'cold-start',
      metric: 'second `pnpm start` to /readyz 200',
      baseline: `bare Fastify ${formatSummary(baseline, 's')}`,
      ours: formatSummary(summary, 's'),
      ratio: `×${formatNumber(ratio(summary.median, baseline.median))}`,
      target: '≤ 1.0 s',
      met: summary.median <= 1.0,
      data: { bareSeconds: baseline, seconds: summary },
    }]
  },
}
