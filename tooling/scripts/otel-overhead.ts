/**
 * What exporting telemetry costs: `flux.balance` throughput over tRPC HTTP
 * (autocannon, 50 connections, one signed-in user) against the server process
 * with OTLP export to the fake receiver and without it, in interleaved rounds;
 * prints the medians and their ratio. Usage: `node --import tsx tooling/scripts/otel-overhead.ts [rounds] [seconds]`.
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import autocannon from 'autocannon'

import { createDb, findFreePort, startEmbeddedPostgres } from '@airi/db'

import { startFakeOtlp } from '../fakes/otlp.ts'

const rounds = Number(process.argv[2] ?? 3)
const seconds = Number(process.argv[3] ?? 10)
const serverDir = fileURLToPath(new URL('../../apps/server/', import.meta.url))
const password = 'correct horse battery staple'

const dataDir = await mkdtemp(join(tmpdir(), 'otel-overhead-'))
const postgres = await startEmbeddedPostgres({ dataDir, database: 'airi' })
const otlp = await startFakeOtlp()

async function withServer<T>(env: Record<string, string>, run: (baseUrl: string) => Promise<T>): Promise<T> {
  const port = await findFreePort()
  const baseUrl = `http://127.0.0.1:${port}`
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: serverDir,
    env: { PATH: process.env.PATH, DATABASE_URL: postgres.url, REDIS_URL: '', HOST: '127.0.0.1', PORT: String(port), API_SERVER_URL: baseUrl, LOG_LEVEL: 'warn', BETTER_AUTH_SECRET: 'bench-secret-0123456789abcdefghijklmnopqrstuvwxyz', ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  try {
    const deadline = Date.now() + 180_000
    while (!(await fetch(`${baseUrl}/readyz`).then(response => response.ok, () => false))) {
      if (Date.now() > deadline)
        throw new Error('server not ready')
      await new Promise(resolve => setTimeout(resolve, 200))
    }
    return await run(baseUrl)
  }
  finally {
    const exited = new Promise(resolve => child.once('exit', resolve))
    child.kill('SIGTERM')
    await exited
  }
}

// Production without its required variables refuses to start; development is what we measure then.
const commonEnv = { NODE_ENV: 'development' }

let token = ''
async function signIn(baseUrl: string): Promise<void> {
  const post = (path: string, body: unknown) => fetch(`${baseUrl}/api/auth${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'origin': baseUrl }, body: JSON.stringify(body) })
  const email = `bench-${Date.now()}@example.com`
  await post('/sign-up/email', { email, password, name: 'bench' })
  const db = createDb({ connectionString: postgres.url })
  await db.updateTable('user').set({ emailVerified: true }).where('email', '=', email).execute()
  await db.destroy()
  const response = await post('/sign-in/email', { email, password })
  token = response.headers.get('set-auth-token') ?? ''
  if (!token)
    throw new Error(`sign-in failed: ${response.status}`)
}

async function throughput(baseUrl: string): Promise<number> {
  if (!token)
    await signIn(baseUrl)
  const url = `${baseUrl}/trpc/flux.balance`
  // A generous timeout: on a loaded machine a slow answer is data, not an error.
  const options = { url, connections: 50, timeout: 60, headers: { authorization: `Bearer ${token}` } }
  await autocannon({ ...options, duration: 2 }) // warm-up
  const result = await autocannon({ ...options, duration: seconds })
  if (result.non2xx > 0 || result.errors > 0)
    throw new Error(`${result.non2xx} non-2xx answers, ${result.errors} errors`)
  return result.requests.average
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!
const plain: number[] = []
const exporting: number[] = []
try {
  for (let round = 0; round < rounds; round++) {
    plain.push(await withServer(commonEnv, throughput))
    exporting.push(await withServer({ ...commonEnv, OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_METRIC_EXPORT_INTERVAL: '5000' }, throughput))
    console.warn(`round ${round + 1}: without ${plain.at(-1)!.toFixed(0)} req/s, exporting ${exporting.at(-1)!.toFixed(0)} req/s`)
  }
  const ratio = median(exporting) / median(plain)
  console.warn(JSON.stringify({ rounds, seconds, withoutMedian: Math.round(median(plain)), exportingMedian: Math.round(median(exporting)), ratio: Number(ratio.toFixed(3)), spansReceived: otlp.spans.length, metricExports: otlp.requests.metrics }))
}
finally {
  await otlp.close()
  await postgres.stop()
  await rm(dataDir, { recursive: true, force: true })
}
