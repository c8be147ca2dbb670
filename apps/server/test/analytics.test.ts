import { randomUUID } from 'node:crypto'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { silentLogger, type Logger } from '@airi/api'
import { createAiriClient, type AiriClient } from '@airi/sdk'
import { startFakePosthog, type FakePosthog, type FakePosthogEvent } from '@airi/tooling/fakes/posthog'
import { startFakeStripe, type FakeStripe } from '@airi/tooling/fakes/stripe'
import { createTestMeter } from '@airi/tooling/test/metrics'
import { until } from '@airi/tooling/test/until'

import { ADMIN_EMAIL, authPost, createVerifiedUser, startTestServer, uniqueEmail, type TestServer, type TestUser } from './harness.ts'

const PRODUCT = 'prod_test_flux'

let posthog: FakePosthog
let stripe: FakeStripe
let server: TestServer
let admin: TestUser
let starterPrice: string
const { reader, meter } = createTestMeter()
/** What the services logged as warnings (PostHog failures among them). */
const warnings: Array<{ obj: object, msg?: string }> = []
const logger: Logger = { ...silentLogger, warn: (obj, msg) => warnings.push({ obj, msg }) }

beforeAll(async () => {
  ;[posthog, stripe] = await Promise.all([startFakePosthog(), startFakeStripe()])
  server = await startTestServer({ posthog: posthog.settings, stripe: stripe.settings, meter, logger })
  await server.api.services.config.set('STRIPE_FLUX_PRODUCT_ID', PRODUCT)
  starterPrice = stripe.addPrice({ product: PRODUCT, currency: 'usd', unitAmount: 300, nickname: 'Starter', metadata: { fluxAmount: '300' } }).id
  admin = await createVerifiedUser(server, ADMIN_EMAIL)
})
afterAll(async () => {
  await server?.close()
  await Promise.all([posthog?.close(), stripe?.close()])
})

const client = (token?: string): AiriClient => createAiriClient({ baseUrl: server.baseUrl, getToken: () => token })
const eventsOf = (userId: string, name: string) => posthog.events.filter(event => event.distinctId === userId && event.event === name)
const waitFor = (userId: string, name: string, match: (event: FakePosthogEvent) => boolean = () => true) =>
  posthog.waitForEvent(event => event.distinctId === userId && event.event === name && match(event))

function grant(user: TestUser, amount: number, idempotencyKey = randomUUID()) {
  return client(admin.token).admin.flux.grant.mutate({ description: 'analytics test', amount, emails: [user.email], idempotencyKey })
}

async function sendMessage(user: TestUser, chatId: string, content = 'hello') {
  return client(user.token).chats.sendMessages.mutate({ chatId, messages: [{ id: randomUUID(), role: 'user', content }] })
}

describe('product events with PostHog configured', () => {
  it('sends user_signed_up with the new user\'s id, and counts user.registered', async () => {
    const before = await reader.counter('user.registered')
    const user = await createVerifiedUser(server)

    const event = await waitFor(user.id, 'user_signed_up')
    expect(event.apiKey).toBe(posthog.apiKey)
    expect(await reader.counter('user.registered')).toBe(before + 1)
    expect(eventsOf(user.id, 'user_signed_up')).toHaveLength(1)
  })

  it('sends flux_granted to the recipient for an admin grant, with the amount and who granted it', async () => {
    const user = await createVerifiedUser(server)
    const key = randomUUID()
    const report = await grant(user, 250, key)
    expect(report.summary.granted).toBe(1)

    const event = await waitFor(user.id, 'flux_granted')
    expect(event.properties).toMatchObject({ amount: 250, source: 'admin_grant', grant_key: key, granted_by: admin.id })

    // A rerun with the same key grants nothing and sends nothing; the next event is the barrier.
    expect((await grant(user, 250, key)).summary.skipped).toBe(1)
    const barrier = randomUUID()
    await grant(user, 1, barrier)
    await waitFor(user.id, 'flux_granted', candidate => candidate.properties.grant_key === barrier)
    expect(eventsOf(user.id, 'flux_granted').map(candidate => candidate.properties.grant_key)).toEqual([key, barrier])
  })

  it('sends payment_completed once a Stripe payment is credited, with amount, currency and Flux', async () => {
    const user = await createVerifiedUser(server)
    const { sessionId } = await client(user.token).billing.checkout.mutate({ stripePriceId: starterPrice, returnUrl: `${server.baseUrl}/app/flux` })
    const completed = stripe.event('checkout.session.completed', stripe.completeSession(sessionId))
    expect((await stripe.deliver(`${server.baseUrl}/api/v1/stripe/webhook`, completed)).status).toBe(200)

    const event = await waitFor(user.id, 'payment_completed')
    expect(event.properties).toMatchObject({ amount: 300, currency: 'usd', flux: 300, stripe_session_id: sessionId })

    // Stripe redelivers: the purchase is credited once, so the event is sent once.
    expect((await stripe.deliver(`${server.baseUrl}/api/v1/stripe/webhook`, completed)).status).toBe(200)
    const barrier = randomUUID()
    await grant(user, 1, barrier)
    await waitFor(user.id, 'flux_granted', candidate => candidate.properties.grant_key === barrier)
    expect(eventsOf(user.id, 'payment_completed')).toHaveLength(1)
  })

  it('sends first_message_sent for the user\'s first message ever, and never again', async () => {
    const user = await createVerifiedUser(server)
    const sdk = client(user.token)
    const first = await sdk.chats.create.mutate({ type: 'group', members: [] })
    const second = await sdk.chats.create.mutate({ type: 'group', members: [] })
    expect(eventsOf(user.id, 'first_message_sent')).toHaveLength(0)

    await sendMessage(user, first.id, 'my very first words')
    await waitFor(user.id, 'first_message_sent')

    // More messages, in the same chat and another, concurrently: still one event.
    await Promise.all([sendMessage(user, first.id), sendMessage(user, second.id), sendMessage(user, second.id)])
    const barrier = randomUUID()
    await grant(user, 1, barrier)
    await waitFor(user.id, 'flux_granted', candidate => candidate.properties.grant_key === barrier)
    expect(eventsOf(user.id, 'first_message_sent')).toHaveLength(1)
    const milestones = await server.database.db.selectFrom('user_milestones').selectAll().where('user_id', '=', user.id).execute()
    expect(milestones.map(row => row.milestone)).toEqual(['first_message_sent'])
  })

  it('decides first_message_sent in Postgres, so a second instance does not send it again', async () => {
    const user = await createVerifiedUser(server)
    const chat = await client(user.token).chats.create.mutate({ type: 'group', members: [] })
    await sendMessage(user, chat.id)
    await waitFor(user.id, 'first_message_sent')

    const other = await startTestServer({ database: server.database, posthog: posthog.settings })
    try {
      const viaOther = createAiriClient({ baseUrl: other.baseUrl, getToken: () => user.token })
      await viaOther.chats.sendMessages.mutate({ chatId: chat.id, messages: [{ id: randomUUID(), role: 'user', content: 'from elsewhere' }] })
      const barrier = randomUUID()
      await createAiriClient({ baseUrl: other.baseUrl, getToken: () => admin.token }).admin.flux.grant.mutate({ description: 'barrier', amount: 1, emails: [user.email], idempotencyKey: barrier })
      await waitFor(user.id, 'flux_granted', candidate => candidate.properties.grant_key === barrier)
    }
    finally {
      await other.close()
    }
    expect(eventsOf(user.id, 'first_message_sent')).toHaveLength(1)
  })
})

describe('a PostHog outage', () => {
  const failures = () => warnings.filter(warning => warning.msg === 'PostHog: sending events failed').length

  /** What a user does while PostHog is down; every step must answer as usual. */
  async function userJourney() {
    const email = uniqueEmail('outage')
    const signUp = await authPost(server, '/sign-up/email', { email, password: 'correct horse battery staple', name: 'outage' })
    expect(signUp.status).toBe(200)
    expect(await signUp.json()).toMatchObject({ user: { email } })
    const user = await createVerifiedUser(server)
    const report = await grant(user, 5)
    expect(report).toMatchObject({ summary: { granted: 1, failed: 0 }, results: [{ status: 'granted', userId: user.id, balanceAfter: 105 }] })
    const chat = await client(user.token).chats.create.mutate({ type: 'group', members: [] })
    const sent = await sendMessage(user, chat.id, 'still works')
    expect(sent.messages.map(message => message.content)).toEqual(['still works'])
    expect((await client(user.token).flux.balance.query()).flux).toBe(105)
  }

  it('changes nothing for the user while PostHog answers 500; the failure is logged', async () => {
    const before = failures()
    const requestsBefore = posthog.requests()
    posthog.failWith(500)
    try {
      await userJourney()
      await until(() => failures() > before, 'a logged PostHog failure')
      expect(posthog.requests()).toBeGreaterThan(requestsBefore)
    }
    finally {
      posthog.failWith(undefined)
    }
  })

  it('changes nothing for the user while PostHog cannot be reached; the failure is logged', async () => {
    const before = failures()
    await posthog.close()
    await userJourney()
    await until(() => failures() > before, 'a logged PostHog failure')
    expect(failures()).toBeGreaterThan(before)
  })
})
