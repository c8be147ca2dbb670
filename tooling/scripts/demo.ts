import { randomUUID } from 'node:crypto'
import { resolve } from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { setTimeout } from 'node:timers/promises'
import { inspect } from 'node:util'

import { ApiError, type Logger } from '@airi/api'
import { createDb, startEmbeddedPostgres } from '@airi/db'

import { parseEnv } from '../../apps/server/src/env.ts'
import { MEMORY_HEADING } from '../../packages/api/src/services/chats/prompt.ts'
import { service, startRuntime } from '../../apps/server/src/runtime.ts'
import { buildServer } from '../../apps/server/src/server.ts'
// The SDK is not a dependency of tooling; the demo talks to the server as any client would.
import { createAiriClient, type AiriClient } from '../../packages/sdk/src/index.ts'
import { extractionAnswer, startFakeOpenAIUpstream } from '../fakes/openai-upstream.ts'
import { startFakeRealtimeSttUpstream } from '../fakes/realtime-stt-upstream.ts'
import { startFakeStreamingTtsUpstream } from '../fakes/streaming-tts-upstream.ts'
import { startFakeStripe } from '../fakes/stripe.ts'
import { startFakeSttUpstream } from '../fakes/stt-upstream.ts'
import { startFakeTtsUpstream } from '../fakes/tts-upstream.ts'

// `pnpm demo`: the whole product on one machine, for people who want to click through it.
// The real server (embedded PostgreSQL, in-process adapters) with the local fakes of
// tooling/fakes standing in for the LLM, TTS, STT and Stripe, wired in the way an operator
// would: Stripe through its env variables, the rest through operator config set by an
// admin over the SDK. Nothing here is on the production path. Data lives in .data/demo,
// apart from `pnpm start`'s; delete that folder for a fresh demo.

const ADMIN = { email: 'admin@example.com', password: 'demo admin password', name: 'Demo Admin' }
const DEMO = { email: 'demo@example.com', password: 'demo user password', name: 'Demo User' }
const DEMO_FLUX = 5_000
const PRODUCT = 'prod_demo_flux'

const dataDir = fileURLToPath(new URL('../../.data/demo', import.meta.url))
const port = Number(process.env.PORT ?? 3000)

// One short line per event on the terminal; a demo needs to show what happens, not JSON.
// An error that is ours to fix (not an ApiError: the outside world answering badly) keeps
// its stack, on the lines below.
function line(mark: string, obj: object, msg: string | undefined): string {
  const { err, ...fields } = obj as { err?: unknown }
  const known = err instanceof ApiError ? { error: `${err.code}: ${err.message}` } : {}
  const shown = { ...known, ...fields }
  const text = `  ${mark} ${msg ?? ''}${Object.keys(shown).length ? ` ${inspect(shown, { breakLength: Infinity, depth: 3 })}` : ''}`
  return err === undefined || err instanceof ApiError ? text : `${text}\n${err instanceof Error ? err.stack : inspect(err)}`
}
const logger: Logger = {
  debug: () => {},
  info: (obj, msg) => console.warn(line('·', obj, msg)),
  warn: (obj, msg) => console.warn(line('!', obj, msg)),
  error: (obj, msg) => console.error(line('✗', obj, msg)),
}

const closers: Array<() => Promise<unknown>> = []
let stopping: Promise<never> | undefined
function stop(code = 0): Promise<never> {
  stopping ??= (async () => {
    console.warn('\nstopping the demo …')
    // Last started, first closed: the server before the database and the fakes.
    for (const close of closers.reverse())
      await close().catch((error: unknown) => console.error(error))
    process.exit(code)
  })()
  return stopping
}
// Ctrl-C reaches tsx and this process, and tsx passes it on: the second SIGINT must
// find a listener too, or tsx's own exits 130 halfway (and pnpm says ELIFECYCLE).
process.on('SIGINT', () => void stop())
process.on('SIGTERM', () => void stop())

try {
  await main()
}
catch (error) {
  console.error(error)
  await stop(1)
}

/** The memory lines of a system message: what follows the server's fixed heading. */
function rememberedIn(system: string): string[] {
  const at = system.indexOf(MEMORY_HEADING)
  return at < 0 ? [] : system.slice(at + MEMORY_HEADING.length).split('\n').filter(line => line.startsWith('- ')).map(line => line.slice(2))
}

/**
 * Long-term memory on the terminal, once per data folder: a fact said in one chat is
 * remembered after the reply, and recalled in the prompt of a new chat.
 */
async function showMemory(demo: AiriClient): Promise<void> {
  const { items: [airi] } = await demo.characters.list.query({ limit: 1 })
  if (!airi || (await demo.memory.list.query({ characterId: airi.id, limit: 1 })).items.length > 0)
    return
  const say = async (chatId: string, content: string) => {
    const { reply } = await demo.chats.respond.mutate({ chatId, message: { id: randomUUID(), content } })
    for (;;) {
      const state = await demo.chats.getReply.query({ chatId, replyId: reply.id })
      if (state.status !== 'streaming')
        return state.text
      await setTimeout(200)
    }
  }
  console.warn('\nlong-term memory:')
  const first = (await demo.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: airi.id }], title: 'Getting to know you' })).id
  console.warn('  you, in a first chat:  "Hi AIRI! My favourite tea is jasmine."')
  await say(first, 'Hi AIRI! My favourite tea is jasmine.')
  // Extraction follows the stored reply, on its own time.
  for (let tries = 0; tries < 100; tries++) {
    const { items } = await demo.memory.list.query({ characterId: airi.id })
    if (items.length > 0) {
      console.warn(`  AIRI remembered:       "${items.map(item => item.content).join('", "')}" (Memory screen of AIRI)`)
      break
    }
    await setTimeout(100)
  }
  const second = (await demo.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: airi.id }], title: 'A new day' })).id
  console.warn('  you, in a new chat:    "What tea should I make tonight?"')
  console.warn(`  AIRI:                  "${await say(second, 'What tea should I make tonight?')}"`)
}

async function main(): Promise<void> {
  const [llm, tts, streamingTts, stt, streamingStt, stripe] = await Promise.all([
    startFakeOpenAIUpstream({ name: 'demo-llm' }),
    startFakeTtsUpstream(),
    startFakeStreamingTtsUpstream(),
    startFakeSttUpstream(),
    // About one spoken sentence per transcript; stop sends what is left of the last one.
    startFakeRealtimeSttUpstream({ utteranceMs: 3000 }),
    startFakeStripe(),
  ])
  closers.push(() => llm.close(), () => tts.close(), () => streamingTts.close(), () => stt.close(), () => streamingStt.close(), () => stripe.close())
  // The fake model answers slowly enough to watch the reply stream in, and says what it
  // was told to remember (the memories recalled into its system message), so recall shows.
  llm.behave(({ body }) => {
    const extraction = extractionAnswer(body)
    if (extraction !== undefined)
      return { kind: 'complete', content: extraction }
    const messages: Array<{ role: string, content: string }> = body?.messages ?? []
    const said = messages.findLast(message => message.role === 'user')?.content ?? ''
    const remembered = rememberedIn(messages.find(message => message.role === 'system')?.content ?? '')
    const memory = remembered.length > 0 ? ` I remember: ${remembered.join(' ')}` : ''
    return { kind: 'complete', content: `You said: "${String(said).slice(0, 200)}".${memory} I am the demo's stand-in model, answering from this machine. Every reply costs a little Flux.`, chunkDelayMs: 60 }
  })
  stripe.addPrice({ id: 'price_demo_starter', product: PRODUCT, currency: 'usd', unitAmount: 300, currencyOptions: { cny: 2200, eur: 280 }, nickname: 'Starter', metadata: { fluxAmount: '300' } })
  stripe.addPrice({ id: 'price_demo_bundle', product: PRODUCT, currency: 'usd', unitAmount: 1000, currencyOptions: { cny: 7200, eur: 920 }, metadata: { fluxAmount: '1200', recommended: 'true' } })

  const postgres = await startEmbeddedPostgres({ dataDir: resolve(dataDir, 'postgres'), database: 'airi' })
  closers.push(() => postgres.stop())
  const db = createDb({ connectionString: postgres.url })
  closers.push(() => db.destroy())

  const env = parseEnv({
    ...process.env,
    NODE_ENV: 'development',
    PORT: String(port),
    DATA_DIR: dataDir,
    DATABASE_URL: postgres.url,
    ADMIN_EMAILS: ADMIN.email,
    STRIPE_SECRET_KEY: stripe.secretKey,
    STRIPE_WEBHOOK_SECRET: stripe.webhookSecret,
    STRIPE_API_URL: stripe.url,
  })
  const runtime = await startRuntime(env, logger)
  closers.push(() => runtime.close())
  const app = await buildServer({ api: runtime.api, service, logger: { level: 'warn' } })
  closers.push(() => app.close())
  await app.listen({ host: env.HOST, port: env.PORT })
  const baseUrl = `http://localhost:${env.PORT}`
  // The fake's checkout page pays at once and delivers the signed event here.
  stripe.webhookUrl = `${baseUrl}/api/v1/stripe/webhook`

  /** Signs the account up (once), marks its address verified, and signs in: an SDK client for it. */
  async function account(who: typeof ADMIN): Promise<AiriClient> {
    const post = (path: string, body: object) => fetch(`${baseUrl}/api/auth${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'origin': baseUrl }, body: JSON.stringify(body) })
    const signUp = await post('/sign-up/email', who)
    if (!signUp.ok && signUp.status !== 422)
      throw new Error(`signing up ${who.email} failed: ${signUp.status} ${await signUp.text()}`)
    // The verification e-mail only goes to the log here: the demo vouches for its own addresses.
    await db.updateTable('user').set({ emailVerified: true }).where('email', '=', who.email).execute()
    const signIn = await post('/sign-in/email', { email: who.email, password: who.password })
    const token = signIn.headers.get('set-auth-token')
    if (!signIn.ok || !token)
      throw new Error(`signing in ${who.email} failed: ${signIn.status} ${await signIn.text()}`)
    return createAiriClient({ baseUrl, getToken: () => token })
  }

  const admin = await account(ADMIN)
  const seal = (model: string, apiKey: string) => admin.admin.llm.encryptKey.mutate({ model, keyId: 'demo', apiKey })
  const [llmKey, ttsKey, streamingKey, sttKey, streamingSttKey] = await Promise.all([
    seal('chat', 'sk-demo-llm'),
    seal('voice', 'sk-demo-tts'),
    seal('streaming-tts', 'sk-demo-streaming'),
    seal('transcriber', 'sk-demo-stt'),
    seal('streaming-stt', 'sk-demo-streaming-stt'),
  ])
  const set = (key: string, value: unknown) => admin.admin.config.set.mutate({ key, value } as Parameters<typeof admin.admin.config.set.mutate>[0])
  await set('LLM_ROUTER_CONFIG', { defaultModel: 'chat', models: { chat: { upstreams: [{ id: 'demo-llm', baseUrl: llm.url, model: 'demo-model', keys: [{ id: llmKey.keyId, ciphertext: llmKey.ciphertext }] }] } } })
  await set('TTS_UPSTREAMS', { defaultModel: 'voice', models: { voice: { adapter: 'openai-compatible', baseUrl: tts.url, model: 'demo-tts', recommendedVoices: ['alloy'], keys: [{ id: ttsKey.keyId, ciphertext: ttsKey.ciphertext }] } } })
  await set('STREAMING_TTS_UPSTREAM', { url: streamingTts.url, keys: [{ id: streamingKey.keyId, ciphertext: streamingKey.ciphertext }], models: [{ id: 'demo-streaming-tts', name: 'Demo voice' }] })
  await set('STT_UPSTREAMS', { defaultModel: 'transcriber', models: { transcriber: { adapter: 'openai-compatible', baseUrl: stt.url, model: 'demo-whisper', keys: [{ id: sttKey.keyId, ciphertext: sttKey.ciphertext }] } } })
  await set('STREAMING_STT_UPSTREAM', { url: streamingStt.url, model: 'demo-transcribe', keys: [{ id: streamingSttKey.keyId, ciphertext: streamingSttKey.ciphertext }] })
  await set('STRIPE_FLUX_PRODUCT_ID', PRODUCT)

  const demo = await account(DEMO)
  // Once per data folder: the idempotency key makes a second run grant nothing.
  await admin.admin.flux.grant.mutate({ emails: [DEMO.email], amount: DEMO_FLUX, description: 'Demo Flux', idempotencyKey: 'demo-flux-grant' })
  if ((await demo.characters.list.query({ limit: 1 })).items.length === 0) {
    await demo.characters.create.mutate({
      characterId: 'airi',
      version: '1',
      coverUrl: `${baseUrl}/app/companions/airi.svg`,
      avatarUrl: `${baseUrl}/app/companions/airi.svg`,
      covers: [],
      capabilities: [],
      avatarModels: [],
      i18n: [{ language: 'en', name: 'AIRI', description: 'A friendly companion.' }],
      prompts: [{ language: 'en', type: 'system', content: 'You are AIRI, a friendly companion. Answer briefly.' }],
    })
  }
  await set('MEMORY_EXTRACTION_MODEL', 'chat')
  await showMemory(demo)
  const { flux } = await demo.flux.balance.query()
  await Promise.all([admin.close(), demo.close()])

  process.stdout.write(`
AIRI demo is running: ${baseUrl}/app/

  demo user   ${DEMO.email} / ${DEMO.password}   (${flux} Flux)
  admin       ${ADMIN.email} / ${ADMIN.password}

Fakes on this machine: LLM ${llm.url}, TTS ${tts.url}, streaming TTS ${streamingTts.url},
STT ${stt.url}, streaming STT ${streamingStt.url}, Stripe ${stripe.url}
(its checkout page pays at once; open the checkout URL with ?cancel to cancel). The fake
streaming voice sends placeholder bytes, not speech. The microphone button works: the fake
transcriber does not listen, it answers "utterance N (… ms)" for every 3 s of audio (and
for the rest on release), and that text is sent as your message. Data: ${dataDir}
Press Ctrl-C to stop.
`)
}
