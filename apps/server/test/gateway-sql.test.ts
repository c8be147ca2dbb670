import { randomUUID } from 'node:crypto'

import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createDb } from '@airi/db'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { createTestDatabase } from '@airi/tooling/test/test-database'

import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * Round trips to Postgres on the money path (issue 14): every statement the
 * server's pool sends is recorded, so a test can say how many one call costs.
 * Counted on the client, which is what a round trip is.
 */
let recording: string[] | undefined

async function countedDatabase() {
  const real = await createTestDatabase()
  await real.db.destroy()
  const db = createDb({ connectionString: real.url, onQuery: sql => recording?.push(sql.replace(/\s+/g, ' ').trim()) })
  return { url: real.url, db, drop: async () => { await db.destroy(); await real.drop() } }
}

async function statementsOf(work: () => Promise<unknown>): Promise<string[]> {
  recording = []
  try {
    await work()
    return recording
  }
  finally {
    recording = undefined
  }
}

let server: TestServer
let upstream: FakeUpstream
let user: TestUser

beforeAll(async () => {
  upstream = await startFakeOpenAIUpstream({ name: 'sql' })
  server = await startTestServer({ database: await countedDatabase() })
  user = await createVerifiedUser(server)
  const { keyId, ciphertext } = server.api.services.llmGateway.encryptKey('chat', 'k0', 'sk-sql')
  await server.api.services.config.set('LLM_ROUTER_CONFIG', { models: { chat: { upstreams: [{ id: 'sql-upstream', baseUrl: upstream.url, model: 'gpt-4o-mini', keys: [{ id: keyId, ciphertext }] }] } } })
})
afterAll(async () => {
  await server.close()
  await upstream.close()
})

const complete = (stream = false) => server.api.services.llmGateway.complete(user.id, { model: 'chat', messages: [{ role: 'user', content: 'hi' }], stream }, new AbortController().signal)

describe('SQL round trips of the money path', () => {
  it('a non-streamed gateway call writes its reservation with the pending log row, then its settlement with the completed row, before answering', async () => {
    upstream.behave(() => ({ kind: 'complete', content: 'hello', usage: { prompt_tokens: 1500, completion_tokens: 1500 } }))
    // Warm: the account exists and the config is in memory, as for every call but a user's first.
    await complete()

    const before = await server.api.services.billing.getBalance(user.id)
    const statements = await statementsOf(() => complete())
    console.warn(`statements of one non-streamed gateway call (${statements.length}):\n  ${statements.join('\n  ')}`)
    expect(statements).toHaveLength(2)
    // The answer goes out settled, so its row needs no step naming the upstream;
    // the completion is the settlement's statement.
    expect(statements[1]).toContain('INSERT INTO flux_transaction')
    expect(statements[1]).toMatch(/INSERT INTO llm_request_log AS l .* ON CONFLICT \(id\) DO UPDATE SET state = 'completed'/)
    // 3 000 tokens: 3 Flux; 5 reserved (9 prompt tokens + 4 096 of output), 2 given back at settlement.
    expect(before - await server.api.services.billing.getBalance(user.id)).toBe(3)
    const logs = await server.database.db.selectFrom('llm_request_log').selectAll().where('user_id', '=', user.id).orderBy('created_at', 'desc').execute()
    expect(logs[0]).toMatchObject({ state: 'completed', status: 200, upstream: 'sql-upstream', total_tokens: 3000, flux_consumed: 3, flux_reserved: 5, usage_source: 'upstream' })
  })

  it('a streamed call costs three: the reservation, the answering upstream (before the first chunk goes out), the settlement', async () => {
    upstream.behave(() => ({ kind: 'complete', content: 'hello there', usage: { prompt_tokens: 10, completion_tokens: 10 } }))
    const statements = await statementsOf(async () => {
      const result = await complete(true)
      if (result.kind !== 'stream')
        throw new Error('expected a stream')
      for await (const _chunk of result.chunks) { /* read it all */ }
    })
    expect(statements).toHaveLength(3)
    expect(statements[1]).toMatch(/^update "llm_request_log" set "upstream" = /)
  })

  it('a debit or a credit is one statement, and a replay answers the first row without writing', async () => {
    const requestId = `sql:${randomUUID()}`
    let first: unknown
    expect(await statementsOf(async () => {
      first = await server.api.services.billing.debit({ userId: user.id, amount: 2, requestId })
    })).toHaveLength(1)
    let replay: unknown
    expect(await statementsOf(async () => {
      replay = await server.api.services.billing.debit({ userId: user.id, amount: 2, requestId })
    })).toHaveLength(1)
    expect(replay).toEqual(first)
    expect(await statementsOf(() => server.api.services.billing.credit({ userId: user.id, amount: 2, requestId: `sql:${randomUUID()}` }))).toHaveLength(1)
  })

  it('a ledger write is a prepared statement that a column added while the server runs does not break', async () => {
    const debit = () => server.api.services.billing.debit({ userId: user.id, amount: 1, requestId: `sql:${randomUUID()}` })
    // Every pooled connection prepares it.
    await Promise.all(Array.from({ length: 20 }, debit))
    await sql`ALTER TABLE flux_transaction ADD COLUMN test_later integer`.execute(server.database.db)
    try {
      const entries = await Promise.all(Array.from({ length: 20 }, debit))
      expect(entries.every(entry => entry.amount === 1)).toBe(true)
    }
    finally {
      await sql`ALTER TABLE flux_transaction DROP COLUMN test_later`.execute(server.database.db)
    }
  })

  describe('when Postgres refuses the writes after the reservation', () => {
    /** Refuses, for this test's user, the given writes: naming the upstream of a pending row, and the settlement's ledger rows. */
    async function refuse(what: { naming?: boolean, settling?: boolean }, work: () => Promise<void>): Promise<void> {
      const db = server.database.db
      await sql.raw(`
        CREATE FUNCTION test_refuse_naming() RETURNS trigger AS $$ BEGIN
          IF NEW.user_id = '${user.id}' AND NEW.state = 'pending' AND NEW.upstream IS NOT NULL THEN RAISE EXCEPTION 'refused by the test'; END IF;
          RETURN NEW; END $$ LANGUAGE plpgsql;
        CREATE FUNCTION test_refuse_settling() RETURNS trigger AS $$ BEGIN
          IF NEW.user_id = '${user.id}' AND NEW.request_id ~ ':(settle|refund)$' AND NEW.description NOT LIKE 'LLM call failed%' THEN RAISE EXCEPTION 'refused by the test'; END IF;
          RETURN NEW; END $$ LANGUAGE plpgsql;
        ${what.naming ? 'CREATE TRIGGER test_refuse_naming BEFORE UPDATE ON llm_request_log FOR EACH ROW EXECUTE FUNCTION test_refuse_naming();' : ''}
        ${what.settling ? 'CREATE TRIGGER test_refuse_settling BEFORE INSERT ON flux_transaction FOR EACH ROW EXECUTE FUNCTION test_refuse_settling();' : ''}
      `).execute(db)
      try {
        await work()
      }
      finally {
        await sql.raw(`
          DROP TRIGGER IF EXISTS test_refuse_naming ON llm_request_log; DROP TRIGGER IF EXISTS test_refuse_settling ON flux_transaction;
          DROP FUNCTION test_refuse_naming(); DROP FUNCTION test_refuse_settling();
        `).execute(db)
      }
    }
    const lastRow = async () => (await server.database.db.selectFrom('llm_request_log').selectAll().where('user_id', '=', user.id).orderBy('created_at', 'desc').limit(1).execute())[0]!

    it('a JSON answer whose settlement fails still goes out once its row names the upstream, and reconciliation charges the flat price', async () => {
      upstream.behave(() => ({ kind: 'complete', content: 'delivered', usage: { prompt_tokens: 10, completion_tokens: 10 } }))
      let result: Awaited<ReturnType<typeof complete>> | undefined
      await refuse({ settling: true }, async () => {
        result = await complete()
      })
      expect(result).toMatchObject({ kind: 'json', text: expect.stringContaining('delivered') })
      expect(await lastRow()).toMatchObject({ state: 'pending', upstream: 'sql-upstream' })
    })

    it('a JSON answer whose settlement and naming both fail is not delivered, and its row stays without an upstream for reconciliation to refund', async () => {
      upstream.behave(() => ({ kind: 'complete', content: 'withheld', usage: { prompt_tokens: 10, completion_tokens: 10 } }))
      let failure: unknown
      await refuse({ naming: true, settling: true }, async () => {
        failure = await complete().then(() => undefined, (error: unknown) => error)
      })
      expect(failure).toBeInstanceOf(Error)
      expect(await lastRow()).toMatchObject({ state: 'pending', upstream: null })
    })
  })
})
