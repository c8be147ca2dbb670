// `pnpm bench [name…] [--quick] [--server-root DIR]`: starts Postgres, redis-server,
// the fakes and the server (each a process of its own), runs the scenarios as
// paired rounds and prints the table; bench-results.json gets the numbers. See
// docs/performance.md.
import { cpus, totalmem, platform, release } from 'node:os'
import { writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'

import pg from 'pg'

import type { BenchContext, Prestarted, Row, Scenario } from './context.ts'
import { SERVER_APP } from './context.ts'
import { startDebitWorker } from './debit.ts'
import { setUpDeployment } from './deployment.ts'
import { cleanupAll, createWorkDir, prepareServerCheckout, repoRoot, startInfra, startServer, type ServerOptions } from './infra.ts'
import { findPgbench } from './load.ts'
import { authRead } from './scenarios/auth-read.ts'
import { coldStart } from './scenarios/cold-start.ts'
import { debit, debitWorkerInput } from './scenarios/debit.ts'
import { fanout, fanoutInstanceOptions } from './scenarios/fanout.ts'
import { gatewayLatency, gatewayOneUser, gatewayStream, gatewayThroughput } from './scenarios/gateway.ts'
import { gatewayKey } from './scenarios/gateway-key.ts'
import { idle, idleInstanceOptions } from './scenarios/idle.ts'
import { memory } from './scenarios/memory.ts'
import { reply } from './scenarios/reply.ts'
import { stageWeb } from './scenarios/stage-web.ts'
import { streamingTts } from './scenarios/streaming-tts.ts'
import { sttRest } from './scenarios/stt-rest.ts'
import { sttStream } from './scenarios/stt-stream.ts'

const scenarios: Scenario[] = [gatewayLatency, gatewayStream, gatewayThroughput, gatewayOneUser, gatewayKey, authRead, fanout, debit, idle, coldStart, streamingTts, sttRest, sttStream, reply, memory, stageWeb]

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'quick': { type: 'boolean', default: false },
    'server-root': { type: 'string', default: process.env.BENCH_SERVER_ROOT },
    'rounds': { type: 'string' },
    'out': { type: 'string' },
  },
})
const quick = values.quick
const serverRoot = resolve(values['server-root'] ?? repoRoot())
const unknown = positionals.filter(name => !scenarios.some(scenario => scenario.name === name))
if (unknown.length > 0) {
  console.error(`unknown scenario(s): ${unknown.join(', ')}; known: ${scenarios.map(scenario => scenario.name).join(', ')}`)
  process.exit(2)
}
const selected = positionals.length > 0
  ? scenarios.filter(scenario => positionals.includes(scenario.name))
  : scenarios.filter(scenario => !quick || scenario.quick)
const rounds = values.rounds ? Number(values.rounds) : quick ? 1 : 3
// Beside the bench, git-ignored there.
const outFile = resolve(values.out ?? join(import.meta.dirname, 'bench-results.json'))
const started = Date.now()
const log = (message: string) => console.error(`[bench ${((Date.now() - started) / 1000).toFixed(1)}s] ${message}`)

let interrupted = false
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted)
      return
    interrupted = true
    log(`${signal}: stopping everything the bench started`)
    void cleanupAll().finally(() => process.exit(130))
  })
}

async function main(): Promise<number> {
  log(`server checkout: ${serverRoot}; scenarios: ${selected.map(scenario => scenario.name).join(', ')}; ${rounds} round(s)${quick ? ' (quick: no targets)' : ''}`)
  const root = await createWorkDir()
  log(`work dir ${root}`)
  const [infra, stageWebSeconds] = await Promise.all([
    startInfra(root).then((started) => {
      log(`Postgres ${started.postgres.adminUrl}, Redis ${started.redis.url}, fakes up`)
      return started
    }),
    prepareServerCheckout(serverRoot, root),
  ])
  if (stageWebSeconds > 0)
    log(`stage-web checked (built when stale) in ${stageWebSeconds.toFixed(1)} s`)
  const databaseUrl = await infra.postgres.databaseUrl('airi_bench')
  const serverOptions: ServerOptions = {
    serverRoot,
    databaseUrl: await infra.postgres.databaseUrl('airi_bench', SERVER_APP),
    redisUrl: infra.redis.url,
    redisPrefix: 'bench:',
    dataDir: join(infra.root, 'data'),
    logFile: join(infra.root, 'server.log'),
  }
  const server = await startServer(serverOptions)
  log(`server ready at ${server.url} (pid ${server.pid}) after ${server.startSeconds.toFixed(1)} s`)
  const db = new pg.Pool({ connectionString: databaseUrl, max: 2, application_name: 'airi-bench' })
  db.on('error', () => {})
  const deployment = await setUpDeployment(server.url, databaseUrl, infra.fakes, quick ? 20 : 100)
  log(`deployment configured, ${deployment.users.length} users`)
  const pgbench = findPgbench()
  if (!pgbench)
    log('pgbench not found (embedded Postgres package, PATH, /usr/lib/postgresql): the SQL ceilings are skipped')

  // Side by side rather than each inside its scenario: on two cores two start-ups
  // take little longer than one, and each would otherwise be paid in turn.
  const prestarted: Prestarted = {}
  const wanted = new Set(selected.map(scenario => scenario.name))
  const since = Date.now()
  const timed = <T>(what: string, started: Promise<T>) => started.then((value) => {
    log(`${what} ready after ${((Date.now() - since) / 1000).toFixed(1)} s`)
    return value
  })
  if (wanted.has('fanout'))
    prestarted.fanout = timed('fanout\'s second instance', startServer(fanoutInstanceOptions(serverOptions)))
  if (wanted.has('idle'))
    prestarted.idle = timed('idle\'s instance', startServer(idleInstanceOptions(serverOptions)))
  if (wanted.has('debit'))
    prestarted.debit = timed('the debit worker', startDebitWorker(debitWorkerInput({ databaseUrl, serverRoot, infra, serverOptions }), infra.root))
  // Settled, not necessarily started: a failed start fails its scenario only.
  await Promise.allSettled(Object.values(prestarted))
  for (const started of Object.values(prestarted))
    (started as Promise<unknown>).catch(() => {})

  const context: BenchContext = { quick, rounds, infra, serverRoot, server, serverOptions, databaseUrl, db, deployment, pgbench, prestarted, log }
  const rows: Row[] = []
  const failures: string[] = []
  for (const scenario of selected) {
    log(`— ${scenario.name}`)
    try {
      rows.push(...await scenario.run(context))
    }
    catch (error) {
      failures.push(scenario.name)
      log(`${scenario.name} failed: ${(error as Error).stack ?? String(error)}`)
    }
  }
  await db.end()

  const shown = quick ? rows.map(row => ({ ...row, met: null })) : rows
  process.stdout.write(`${formatTable(shown)}\n`)
  const machine = { os: `${platform()} ${release()}`, cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30 * 10) / 10, node: process.version }
  process.stdout.write(`\nmachine: ${machine.cpu} × ${machine.cores}, ${machine.memoryGiB} GiB, ${machine.os}, Node ${machine.node}\n`)
  await writeFile(outFile, `${JSON.stringify({ date: new Date().toISOString(), serverRoot, quick, rounds, machine, rows: shown, failures }, null, 2)}\n`)
  log(`wrote ${outFile}`)
  if (failures.length > 0)
    log(`scenarios that crashed: ${failures.join(', ')} (server log: ${serverOptions.logFile})`)
  return failures.length > 0 ? 1 : 0
}

function formatTable(rows: Row[]): string {
  const header = ['scenario', 'metric', 'baseline', 'ours', 'ratio', 'target', 'met']
  const lines = rows.map(row => [row.scenario, row.metric, row.baseline, row.ours, row.ratio, row.target, row.met === null ? '—' : row.met ? 'yes' : 'NO'])
  return [
    `| ${header.join(' | ')} |`,
    `|${header.map(() => '---').join('|')}|`,
    ...lines.map(cells => `| ${cells.map(cell => cell.replaceAll('|', '\\|')).join(' | ')} |`),
  ].join('\n')
}

let code = 1
try {
  code = await main()
}
catch (error) {
  log(`bench failed: ${(error as Error).stack ?? String(error)}`)
}
finally {
  if (!interrupted)
    await cleanupAll()
}
process.exit(code)
