import { randomUUID } from 'node:crypto'

import pg from 'pg'

import { BENCH_ADMIN_EMAIL } from './infra.ts'

/** Calls a tRPC procedure over plain HTTP (superjson's `{ json }` envelope), as the SDK would. */
export async function trpcCall<T>(baseUrl: string, token: string | undefined, path: string, input: unknown, kind: 'query' | 'mutation'): Promise<T> {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }
  const body = JSON.stringify({ json: input ?? null })
  const response = kind === 'query'
    ? await fetch(`${baseUrl}/trpc/${path}?input=${encodeURIComponent(body)}`, { headers })
    : await fetch(`${baseUrl}/trpc/${path}`, { method: 'POST', headers, body })
  const payload = await response.json() as { result?: { data?: { json?: T } }, error?: { json?: { message?: string } } }
  if (!response.ok || !payload.result)
    throw new Error(`${path} failed: ${response.status} ${payload.error?.json?.message ?? JSON.stringify(payload)}`)
  return payload.result.data!.json as T
}

export interface BenchUser {
  id: string
  email: string
  /** A better-auth session token (bearer). */
  token: string
}

const PASSWORD = 'correct horse battery staple'

async function authPost(baseUrl: string, path: string, body: unknown): Promise<Response> {
  // better-auth refuses a POST without an Origin outside tests; a browser on the server's own origin sends it.
  return fetch(`${baseUrl}/api/auth${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'origin': baseUrl }, body: JSON.stringify(body) })
}

/**
 * Signs a user up and in through better-auth's HTTP API. The verification e-mail
 * only goes to the server's log, so the bench marks the address verified in the
 * database, as following the link would.
 */
export async function createUser(baseUrl: string, db: pg.Pool, email: string): Promise<BenchUser> {
  const signUp = await authPost(baseUrl, '/sign-up/email', { email, password: PASSWORD, name: email.split('@')[0] })
  if (!signUp.ok)
    throw new Error(`sign-up of ${email} failed: ${signUp.status} ${await signUp.text()}`)
  await db.query('UPDATE "user" SET "emailVerified" = true WHERE email = $1', [email.toLowerCase()])
  const signIn = await authPost(baseUrl, '/sign-in/email', { email, password: PASSWORD })
  const token = signIn.headers.get('set-auth-token')
  const body = await signIn.json() as { user?: { id: string } }
  if (!signIn.ok || !token || !body.user)
    throw new Error(`sign-in of ${email} failed: ${signIn.status}`)
  return { id: body.user.id, email, token }
}

export interface Deployment {
  admin: BenchUser
  users: BenchUser[]
  /** The alias the gateway serves, and the fake upstream's key behind it. */
  model: string
  upstreamKey: string
  ttsKey: string
}

export const BENCH_MODEL = 'chat'
/** Enough Flux that no user of the bench ever runs out. */
const BENCH_INITIAL_FLUX = 1_000_000_000

/**
 * Configures a fresh deployment the way an operator would (admin procedures over
 * tRPC): users start with plenty of Flux, the gateway routes `chat` to the fake
 * upstream, streaming speech goes to the fake streaming upstream. Then signs up
 * `userCount` users, a few at a time.
 */
export async function setUpDeployment(baseUrl: string, databaseUrl: string, fakes: { openaiUrl: string, ttsUrl: string }, userCount: number): Promise<Deployment> {
  const db = new pg.Pool({ connectionString: databaseUrl, max: 2 })
  try {
    const admin = await createUser(baseUrl, db, BENCH_ADMIN_EMAIL)
    const set = (key: string, value: unknown) => trpcCall(baseUrl, admin.token, 'admin.config.set', { key, value }, 'mutation')
    const encrypt = (model: string, keyId: string, apiKey: string) =>
      trpcCall<{ keyId: string, ciphertext: string }>(baseUrl, admin.token, 'admin.llm.encryptKey', { model, keyId, apiKey }, 'mutation')

    await set('INITIAL_USER_FLUX', BENCH_INITIAL_FLUX)
    const upstreamKey = 'sk-bench-upstream'
    const key = await encrypt(BENCH_MODEL, 'k0', upstreamKey)
    await set('LLM_ROUTER_CONFIG', {
      models: { [BENCH_MODEL]: { upstreams: [{ id: 'fake', baseUrl: fakes.openaiUrl, model: 'gpt-4o-mini', keys: [{ id: key.keyId, ciphertext: key.ciphertext }] }] } },
    })
    const ttsKey = 'sk-bench-stream'
    const streamKey = await encrypt('streaming-tts', 'k0', ttsKey)
    await set('STREAMING_TTS_UPSTREAM', { url: fakes.ttsUrl, keys: [{ id: streamKey.keyId, ciphertext: streamKey.ciphertext }], models: [{ id: 'm' }] })

    const users: BenchUser[] = []
    const run = randomUUID().slice(0, 8)
    let next = 0
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (next < userCount) {
        const index = next++
        users[index] = await createUser(baseUrl, db, `bench-${run}-${index}@example.com`)
      }
    }))
    // Open every account now (the first balance read does), so no scenario pays for it.
    for (const user of users)
      await trpcCall(baseUrl, user.token, 'flux.balance', undefined, 'query')
    return { admin, users, model: BENCH_MODEL, upstreamKey, ttsKey }
  }
  finally {
    await db.end()
  }
}
