import { randomUUID } from 'node:crypto'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import { createAiriClient, type AiriClient, type WebSocketConstructor } from '@airi/sdk'
import { startFakeStripe, type FakeStripe } from '@airi/tooling/fakes/stripe'
import { createTestDatabase, testRedisPrefix } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { ADMIN_EMAIL, createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * A change to the balance that the user's devices did not make themselves (a
 * top-up, a refund, a grant) reaches every live `chats.onMessages` subscription of
 * that user, on every instance, as `{ type: 'balance', balance }` (issue 20, item 9).
 */

const PRODUCT = 'prod_test_balance_event'
const INITIAL = 100

let stripe: FakeStripe
let a: TestServer
let b: TestServer
let starter: string
const clients: AiriClient[] = []

beforeAll(async () => {
  stripe = await startFakeStripe()
  const database = await createTestDatabase()
  // Two instances of one deployment: one Postgres, one Redis namespace, one Stripe account.
  const shared = { database, redisPrefix: testRedisPrefix(), stripe: stripe.settings }
  a = await startTestServer(shared)
  b = await startTestServer(shared)
  await a.api.services.config.set('STRIPE_FLUX_PRODUCT_ID', PRODUCT)
  starter = stripe.addPrice({ product: PRODUCT, currency: 'usd', unitAmount: 300, metadata: { fluxAmount: '300' } }).id
})
afterAll(async () => {
  await Promise.all(clients.map(client => client.close()))
  await Promise.all([a?.close(), b?.close()])
  await a?.database.drop()
  await stripe?.close()
})

function client(token: string, server: TestServer): AiriClient {
  const created = createAiriClient({ baseUrl: server.baseUrl, getToken: () => token, WebSocket: WebSocket as unknown as WebSocketConstructor })
  clients.push(created)
  return created
}

type Seen = { id: string, data: { type: string, balance?: number, messages: Array<{ content: string }> } }

/** A device of `user` on `server`, keeping every event of its live subscription. */
async function device(user: TestUser, server: TestServer) {
  const events: Seen[] = []
  const errors: unknown[] = []
  const subscription = client(user.token, server).chats.onMessages.subscribe(undefined, {
    onData: event => void events.push(event as unknown as Seen),
    onError: error => errors.push(error),
  })
  await until(() => events.length > 0, 'the ready event')
  const balances = () => events.filter(event => event.data.type === 'balance').map(event => event.data.balance)
  return { events, errors, balances, stop: () => subscription.unsubscribe() }
}

describe('balance events on the user\'s feed', () => {
  it('a top-up, a refund and a grant reach both devices of the user, on both instances; the user\'s own spending does not', async () => {
    const user = await createVerifiedUser(a)
    const sdk = client(user.token, a)
    expect((await sdk.flux.balance.query()).flux).toBe(INITIAL)
    const phone = await device(user, a)
    const browser = await device(user, b)
    const both = [phone, browser]

    // Top-up: Stripe's signed completion arrives at instance A.
    const { sessionId } = await sdk.billing.checkout.mutate({ stripePriceId: starter, returnUrl: `${a.baseUrl}/app/flux` })
    expect((await stripe.deliver(`${a.baseUrl}/api/v1/stripe/webhook`, stripe.event('checkout.session.completed', stripe.completeSession(sessionId)))).status).toBe(200)
    for (const seen of both)
      await until(() => seen.balances().includes(INITIAL + 300), 'the top-up\'s balance event')

    // A partial refund (delivered to instance B this time) takes Flux back.
    expect((await stripe.deliver(`${b.baseUrl}/api/v1/stripe/webhook`, stripe.event('charge.refunded', stripe.refundCharge(sessionId, 100)))).status).toBe(200)
    for (const seen of both)
      await until(() => seen.balances().includes(INITIAL + 200), 'the refund\'s balance event')

    // An admin grant.
    const admin = await createVerifiedUser(a, ADMIN_EMAIL)
    await client(admin.token, b).admin.flux.grant.mutate({ description: 'thanks', amount: 50, emails: [user.email], idempotencyKey: randomUUID() })
    for (const seen of both)
      await until(() => seen.balances().includes(INITIAL + 250), 'the grant\'s balance event')

    // Spending (the gateway's and the meter's debits) is not announced: the device that spends re-reads.
    await a.api.services.billing.debit({ userId: user.id, amount: 5, requestId: `spent:${randomUUID()}` })
    const chat = await sdk.chats.create.mutate({ type: 'group', title: 'marker', members: [] })
    await sdk.chats.sendMessages.mutate({ chatId: chat.id, messages: [{ id: randomUUID(), role: 'user', content: 'marker' }] })
    for (const seen of both) {
      await until(() => seen.events.some(event => event.data.messages.some(message => message.content === 'marker')), 'the marker message')
      expect(seen.events.map(event => [event.data.type, event.data.balance])).toEqual([
        ['ready', undefined],
        ['balance', INITIAL + 300],
        ['balance', INITIAL + 200],
        ['balance', INITIAL + 250],
        ['chat', undefined],
        ['messages', undefined],
      ])
      // Every event carries a position to resume from, and a balance or chat event does not move it.
      const ids = seen.events.map(event => Number(event.id))
      expect(ids.slice(0, 5)).toEqual([0, 0, 0, 0, 0])
      expect(ids[5]).toBe(1)
      expect(seen.errors).toEqual([])
      seen.stop()
    }
    expect((await sdk.flux.balance.query()).flux).toBe(INITIAL + 245)
  })
})
