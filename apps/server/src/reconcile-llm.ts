import { parseArgs } from 'node:util'

import { pino } from 'pino'

import { EnvError, parseEnv } from './env.ts'
import { startRuntime } from './runtime.ts'

// `pnpm llm:reconcile [--older-than-minutes 10] [--limit 1000]`: settles the LLM
// calls whose request log row is still pending (a process died between the
// reservation and the settlement), prints what it did as JSON, and exits.
// Safe to run at any time and more than once; see docs/gateway.md.
/** A mistake in the command line: its message is all the operator needs. */
class UsageError extends Error {}

try {
  const { values } = parseArgs({
    // launch.js passes the entry name (`reconcile-llm`) along.
    allowPositionals: true,
    options: {
      'older-than-minutes': { type: 'string', default: '10' },
      'limit': { type: 'string', default: '1000' },
    },
  })
  const olderThanMinutes = Number(values['older-than-minutes'])
  const limit = Number(values.limit)
  if (!(olderThanMinutes >= 0) || !Number.isInteger(limit) || limit < 1)
    throw new UsageError('--older-than-minutes must be a number ≥ 0 and --limit a whole number ≥ 1')

  const env = parseEnv(process.env)
  const logger = pino({ level: env.LOG_LEVEL })
  const runtime = await startRuntime(env, logger)
  try {
    const report = await runtime.api.services.llmGateway.reconcilePending({ olderThanMs: olderThanMinutes * 60_000, limit })
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
  }
  finally {
    await runtime.close()
  }
}
catch (error) {
  const plain = error instanceof EnvError || error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
  console.error(plain ? (error as Error).message : error)
  process.exit(1)
}
