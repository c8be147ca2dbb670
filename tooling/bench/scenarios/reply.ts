import { randomUUID } from 'node:crypto'
import { Agent, request } from 'node:http'
import { performance } from 'node:perf_hooks'

import WebSocket from 'ws'

import { REQUEST_DEADLINE_MS, type BenchContext, type Row, type Scenario } from '../context.ts'
import { trpcCall, type BenchUser } from '../deployment.ts'
import { startServer, type ServerOptions, type ServerProcess } from '../infra.ts'
import { formatNumber, formatSigned, formatSummary, percentile, summarize } from '../stats.ts'
import { opened } from '../subscribers.ts'
import { captureCalls } from './gateway.ts'

const SYSTEM_PROMPT = 'You are a character of the bench. Answer briefly.'
const USER_MESSAGE = 'hi'
const MAX_TOKENS = 64
/** A fresh chat every few turns, so the prompt's history stays a few messages long. */
const TURNS_PER_CHAT = 10
/**
 * Turns are spread over users so that none comes near the per-user message limit
 * (CHAT_RATE_LIMIT_PER_MINUTE, 120 by default): a user makes at most this many in
 * the whole run, its warm-up included.
 */
const TURNS_PER_USER = 100
const WARM_UP_TURNS_PER_USER = 3
export const TIMED_TURNS_PER_USER = TURNS_PER_USER - WARM_UP_TURNS_PER_USER

/** The second instance of the two-instance run: the same deployment, a log of its own. */
function replyInstanceOptions(options: ServerOptions): ServerOptions {
  return { ...options, logFile: options.logFile.replace(/\.log$/, '-reply-2.log') }
}

interface Posted { status: number, body: string, firstContent: number | undefined, ended: number }

/**
 * One POST on `agent` (one kept-alive connection: the same client for the gateway
 * call and `chats.respond`), read to its end. `firstContent` is when the first SSE
 * chunk with non-empty content arrived, for a streamed completion.
 */
function post(agent: Agent, url: string, token: string, body: unknown): Promise<Posted> {
  const target = new URL(url)
  const payload = JSON.stringify(body)
  const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), 'authorization': `Bearer ${token}` }
  return new Promise<Posted>((resolve, reject) => {
    const req = request({ agent, host: target.hostname, port: target.port, path: target.pathname, method: 'POST', headers }, (res) => {
      let text = ''
      let firstContent: number | undefined
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        const at = performance.now()
        text += chunk
        if (firstContent === undefined && hasContent(text))
          firstContent = at
      })
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: text, firstContent, ended: performance.now() }))
      res.once('error', reject)
    })
    req.once('error', reject)
    req.setTimeout(REQUEST_DEADLINE_MS, () => req.destroy(new Error(`POST ${url}: no answer within ${REQUEST_DEADLINE_MS} ms`)))
    req.end(payload)
  })
}

/** Whether an SSE body so far holds a chunk whose delta has content (the role chunk's `''` does not count). */
function hasContent(sse: string): boolean {
  for (const line of sse.split(/\r?\n/)) {
    if (!line.startsWith('data: ') || line === 'data: [DONE]')
      continue
    try {
      const content = JSON.parse(line.slice('data: '.length))?.choices?.[0]?.delta?.content
      if (typeof content === 'string' && content.length > 0)
        return true
    }
    catch {
      // A line cut between two reads: it is whole on the next one.
    }
  }
  return false
}

/** The parts of a `chats.onMessages` event the bench reads. */
interface ChatEvent { type?: string, replyId?: string, delta?: string, status?: string, error?: unknown }

interface ReplySeen { firstDelta?: number, ended?: number }

/** A device of the user: one `chats.onMessages` subscription that notes when each reply's first delta and its end arrived. */
interface Device {
  /** Resolves once `replyId` has ended here; fails on a failed reply, a closed socket or after the deadline. */
  ended: (replyId: string) => Promise<ReplySeen>
  close: () => void
}

async function openDevice(baseUrl: string, token: string): Promise<Device> {
  const socket = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/trpc?connectionParams=1`)
  const seen = new Map<string, ReplySeen>()
  const waiters = new Map<string, { resolve: (value: ReplySeen) => void, reject: (error: Error) => void }>()
  let broken: Error | undefined
  let markStarted!: () => void
  let startFailed!: (error: Error) => void
  const started = new Promise<void>((resolve, reject) => {
    markStarted = resolve
    startFailed = reject
  })
  started.catch(() => {})
  const fail = (error: Error) => {
    broken ??= error
    startFailed(broken)
    for (const waiter of waiters.values())
      waiter.reject(broken)
    waiters.clear()
  }
  const entry = (replyId: string) => seen.get(replyId) ?? seen.set(replyId, {}).get(replyId)!
  socket.on('message', (data) => {
    // Taken first: the parse below is not part of the delivery.
    const at = performance.now()
    const text = String(data)
    // tRPC's keep-alive: unanswered, the server drops the socket.
    if (text === 'PING')
      return socket.send('PONG')
    let message: { error?: unknown, result?: { type?: string, data?: { json?: { id?: string, data?: ChatEvent } } } }
    try {
      message = JSON.parse(text)
    }
    catch {
      return fail(new Error(`the subscription sent what is not JSON: ${text.slice(0, 300)}`))
    }
    if (message.error)
      return fail(new Error(`the subscription failed: ${text.slice(0, 300)}`))
    if (message.result?.type === 'started')
      return markStarted()
    // A tracked event: `{ id, data }` inside superjson's `{ json }`.
    const event = message.result?.data?.json?.data
    if (event?.type === 'reply' && event.delta) {
      entry(event.replyId!).firstDelta ??= at
    }
    else if (event?.type === 'reply.end') {
      if (event.status === 'failed')
        return fail(new Error(`reply ${event.replyId} failed: ${JSON.stringify(event.error)}`))
      entry(event.replyId!).ended = at
      waiters.get(event.replyId!)?.resolve(seen.get(event.replyId!)!)
      waiters.delete(event.replyId!)
    }
  })
  socket.on('error', fail)
  socket.on('close', code => fail(new Error(`the subscription's socket closed (${code})`)))
  await opened(socket)
  socket.send(JSON.stringify({ method: 'connectionParams', data: { token } }))
  socket.send(JSON.stringify({ id: 1, method: 'subscription', params: { path: 'chats.onMessages', input: { json: {} } } }))
  await deadline(started, 'the subscription to start')
  return {
    ended(replyId) {
      const known = seen.get(replyId)
      if (broken)
        return Promise.reject(broken)
      if (known?.ended !== undefined)
        return Promise.resolve(known)
      return deadline(new Promise<ReplySeen>((resolve, reject) => waiters.set(replyId, { resolve, reject })), `reply ${replyId} to end`)
    },
    close: () => socket.terminate(),
  }
}

function deadline<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), REQUEST_DEADLINE_MS)
  })
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer))
}

/** A bench user taking turns: its own character and bot chats, and its two devices. */
export interface Account {
  userId: string
  token: string
  characterId: string
  chats: string[]
  devices: [Device, Device]
  /** Turns taken so far (each chat takes TURNS_PER_CHAT of them). */
  turns: number
}

/** Where a phase runs: the instance the users call, one kept-alive connection to it, the users taking turns. */
export interface Setup {
  server: ServerProcess
  agent: Agent
  model: string
  /** What every turn (and its paired gateway call) says. */
  message: string
  accounts: Account[]
}

/** The gateway's own time to first token: a streamed completion through our gateway, to its first content chunk. */
async function gatewayFirstToken(setup: Setup, account: Account): Promise<number> {
  const sent = performance.now()
  const answer = await post(setup.agent, `${setup.server.url}/api/v1/openai/chat/completions`, account.token, {
    model: setup.model,
    stream: true,
    max_tokens: MAX_TOKENS,
    messages: [{ role: 'system', content: SYSTEM_PROMPT }, { role: 'user', content: setup.message }],
  })
  if (answer.status !== 200 || answer.firstContent === undefined)
    throw new Error(`the streamed gateway call answered ${answer.status} without content: ${answer.body.slice(0, 300)}`)
  return answer.firstContent - sent
}

/**
 * One turn: `chats.respond` (the first device's call), timed to the first `reply`
 * delta on the second device; waits until both devices saw `reply.end`, so the
 * chat has no reply streaming when its next turn starts.
 */
export async function replyTurn(setup: Setup, account: Account): Promise<{ firstDelta: number, answered: number }> {
  const chatId = account.chats[Math.floor(account.turns++ / TURNS_PER_CHAT)]
  if (!chatId)
    throw new Error(`a bench user took more than ${TURNS_PER_USER} turns`)
  const sent = performance.now()
  const answer = await post(setup.agent, `${setup.server.url}/trpc/chats.respond`, account.token, {
    json: { chatId, message: { id: randomUUID(), content: setup.message }, model: setup.model, maxTokens: MAX_TOKENS, language: 'en' },
  })
  if (answer.status !== 200)
    throw new Error(`chats.respond answered ${answer.status}: ${answer.body.slice(0, 300)}`)
  const replyId = (JSON.parse(answer.body) as { result: { data: { json: { reply: { id: string } } } } }).result.data.json.reply.id
  const [, second] = await Promise.all([account.devices[0].ended(replyId), account.devices[1].ended(replyId)])
  if (second.firstDelta === undefined)
    throw new Error(`reply ${replyId} ended on the second device without a delta`)
  return { firstDelta: second.firstDelta - sent, answered: answer.ended - sent }
}

/** A character of `user`'s own, TURNS_PER_USER turns' worth of bot chats with it, its devices on `deviceServers`. */
async function openAccount(server: ServerProcess, deviceServers: [ServerProcess, ServerProcess], { id: userId, token }: BenchUser, model: string, opened: Device[]): Promise<Account> {
  const character = await trpcCall<{ id: string }>(server.url, token, 'characters.create', {
    characterId: `bench-reply-${randomUUID().slice(0, 8)}`,
    version: '1',
    coverUrl: 'https://example.com/cover.png',
    avatarUrl: 'https://example.com/avatar.png',
    defaultModelId: model,
    i18n: [{ language: 'en', name: 'Bench', description: 'A character of the bench.' }],
    prompts: [{ language: 'en', type: 'system', content: SYSTEM_PROMPT }],
  }, 'mutation')
  const chats: string[] = []
  for (let index = 0; index < Math.ceil(TURNS_PER_USER / TURNS_PER_CHAT); index++)
    chats.push((await trpcCall<{ id: string }>(server.url, token, 'chats.create', { type: 'bot', title: `bench reply ${index}`, members: [{ type: 'character', id: character.id }] }, 'mutation')).id)
  for (const deviceServer of deviceServers)
    opened.push(await openDevice(deviceServer.url, token))
  return { userId, token, characterId: character.id, chats, devices: opened.slice(-2) as [Device, Device], turns: 0 }
}

export interface SetupOptions {
  /** What the turns say (USER_MESSAGE when not given). */
  message?: string
  /** Runs once the accounts are open, before the warm-up turns (e.g. to seed their memories). */
  prepare?: (setup: Setup) => Promise<void>
}

/** Opens an account per user (calls to `server`, devices on `deviceServers`), warms each up, runs `work`, closes what it opened. */
export async function withSetup<T>(context: BenchContext, server: ServerProcess, deviceServers: [ServerProcess, ServerProcess], users: BenchUser[], work: (setup: Setup) => Promise<T>, options: SetupOptions = {}): Promise<T> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const devices: Device[] = []
  try {
    const setup: Setup = { server, agent, model: context.deployment.model, message: options.message ?? USER_MESSAGE, accounts: [] }
    for (const user of users)
      setup.accounts.push(await openAccount(server, deviceServers, user, setup.model, devices))
    await options.prepare?.(setup)
    for (const account of setup.accounts) {
      for (let index = 0; index < WARM_UP_TURNS_PER_USER; index++) {
        await gatewayFirstToken(setup, account)
        await replyTurn(setup, account)
      }
    }
    return await work(setup)
  }
  finally {
    devices.forEach(device => device.close())
    agent.destroy()
  }
}

interface PhaseNumbers { baseP50: number[], baseP99: number[], oursP50: number[], oursP99: number[], addedP50: number[], addedP99: number[], answeredP50: number[] }

/** Paired rounds, each turn right after its baseline call (same user): a burst of noise hits both. */
async function measure(context: BenchContext, setup: Setup, label: string, turns: number): Promise<PhaseNumbers> {
  let timed = 0
  const numbers: PhaseNumbers = { baseP50: [], baseP99: [], oursP50: [], oursP99: [], addedP50: [], addedP99: [], answeredP50: [] }
  for (let round = 0; round < context.rounds; round++) {
    const base: number[] = []
    const ours: number[] = []
    const answered: number[] = []
    for (let index = 0; index < turns; index++) {
      const account = setup.accounts[Math.floor(timed++ / TIMED_TURNS_PER_USER)]!
      base.push(await gatewayFirstToken(setup, account))
      const turn = await replyTurn(setup, account)
      ours.push(turn.firstDelta)
      answered.push(turn.answered)
    }
    numbers.baseP50.push(percentile(base, 50))
    numbers.baseP99.push(percentile(base, 99))
    numbers.oursP50.push(percentile(ours, 50))
    numbers.oursP99.push(percentile(ours, 99))
    numbers.addedP50.push(percentile(ours, 50) - percentile(base, 50))
    numbers.addedP99.push(percentile(ours, 99) - percentile(base, 99))
    numbers.answeredP50.push(percentile(answered, 50))
    context.log(`reply ${label} round ${round + 1}: gateway TTFT p50/p99 ${formatNumber(numbers.baseP50.at(-1)!)}/${formatNumber(numbers.baseP99.at(-1)!)} ms, `
      + `respond → 2nd device ${formatNumber(numbers.oursP50.at(-1)!)}/${formatNumber(numbers.oursP99.at(-1)!)} ms (respond answered p50 ${formatNumber(numbers.answeredP50.at(-1)!)} ms)`)
  }
  return numbers
}

const ms = (value: number) => `${formatSigned(value)} ms`

function rows(numbers: PhaseNumbers, label: string, turns: number, targetMs: number): Row[] {
  const addedP50 = summarize(numbers.addedP50)
  const addedP99 = summarize(numbers.addedP99)
  return [
    {
      scenario: 'reply',
      metric: `${label}: respond → first reply delta on a 2nd device, p50 (${turns} turns/round)`,
      baseline: `gateway TTFT ${formatSummary(summarize(numbers.baseP50), 'ms')}`,
      ours: formatSummary(summarize(numbers.oursP50), 'ms'),
      ratio: ms(addedP50.median),
      target: `added ≤ ${targetMs} ms`,
      met: addedP50.median <= targetMs,
      data: { gatewayP50: summarize(numbers.baseP50), oursP50: summarize(numbers.oursP50), addedP50, respondAnsweredP50: summarize(numbers.answeredP50) },
    },
    {
      scenario: 'reply',
      metric: `${label}: p99`,
      baseline: `gateway TTFT ${formatSummary(summarize(numbers.baseP99), 'ms')}`,
      ours: formatSummary(summarize(numbers.oursP99), 'ms'),
      ratio: ms(addedP99.median),
      target: '—',
      met: null,
      data: { gatewayP99: summarize(numbers.baseP99), oursP99: summarize(numbers.oursP99), addedP99 },
    },
  ]
}

/**
 * `chats.respond` → the first `reply` delta on the user's second device, against the
 * gateway's own time to first token (a streamed completion through our gateway to
 * the same fake upstream) in the same run; on one instance, then with the second
 * device on another instance (Redis pub/sub between them).
 */
export const reply: Scenario = {
  name: 'reply',
  quick: true,
  async run(context: BenchContext): Promise<Row[]> {
    const turns = context.quick ? 20 : 200
    const perPhase = Math.ceil(context.rounds * turns / TIMED_TURNS_PER_USER)
    // Not users[0]: other scenarios send through it (fan-out's messages count against the same limit).
    const users = context.deployment.users.slice(1)
    if (users.length < 1 + 2 * perPhase)
      throw new Error(`reply needs ${1 + 2 * perPhase} bench users besides the first, the deployment has ${users.length}`)
    // Started first and awaited before anything is measured: no start-up competes with a measurement.
    const starting = startServer(replyInstanceOptions(context.serverOptions))
    starting.catch(() => {})
    let second: ServerProcess | undefined
    try {
      second = await starting
      const one = context.server
      const sql = await withSetup(context, one, [one, one], users.slice(0, 1), async (setup) => {
        const account = setup.accounts[0]!
        const gateway = await captureCalls(context, async () => {
          await gatewayFirstToken(setup, account)
        })
        const turn = await captureCalls(context, async () => {
          await replyTurn(setup, account)
        })
        return { gateway: gateway.perCall, turn: turn.perCall, last: turn.last }
      })
      context.log(`reply: ${formatNumber(sql.turn)} SQL statements per turn (gateway call alone ${formatNumber(sql.gateway)}); the last turn's:\n  ${sql.last.join('\n  ')}`)

      const single = await withSetup(context, one, [one, one], users.slice(1, 1 + perPhase), setup => measure(context, setup, '1 instance', turns))
      const across = await withSetup(context, one, [one, second], users.slice(1 + perPhase, 1 + 2 * perPhase), setup => measure(context, setup, '2 instances', turns))
      return [
        ...rows(single, '1 instance', turns, 5),
        ...rows(across, '2 instances (2nd device on the other)', turns, 15),
        {
          scenario: 'reply-sql',
          metric: 'SQL statements per turn (respond, reply, 2 devices; Postgres statement log)',
          baseline: `gateway call ${formatNumber(sql.gateway)}`,
          ours: formatNumber(sql.turn),
          ratio: '—',
          target: '—',
          met: null,
          data: { gatewayStatementsPerCall: sql.gateway, statementsPerTurn: sql.turn, lastTurn: sql.last.join(';\n') },
        },
      ]
    }
    finally {
      second ??= await starting.catch(() => undefined)
      await second?.stop()
    }
  },
}
