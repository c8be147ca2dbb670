import { createHmac, randomBytes, randomUUID } from 'node:crypto'

import pg from 'pg'

import { REQUEST_DEADLINE_MS } from './context.ts'
import { BENCH_ADMIN_EMAIL, BENCH_AUTH_SECRET, type Fakes } from './infra.ts'

/** Calls a tRPC procedure over plain HTTP (superjson's `{ json }` envelope), as the SDK would. */
export async function trpcCall<T>(baseUrl: string, token: string | undefined, path: string, input: unknown, kind: 'query' | 'mutation'): Promise<T> {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }
  const body = JSON.stringify({ json: input ?? null })
  const signal = AbortSignal.timeout(REQUEST_DEADLINE_MS)
  const response = kind === 'query'
    ? await fetch(`${baseUrl}/trpc/${path}?input=${encodeURIComponent(body)}`, { headers, signal })
    : await fetch(`${baseUrl}/trpc/${path}`, { method: 'POST', headers, body, signal })
  const payload = await response.json() as { result?: { data?: { json?: T } }, error?: { json?: { message?: string } } }
  if (!response.ok || !payload.result)
    throw new Error(`${path} failed: ${response.status} ${payload.error?.json?.message ?? JSON.stringify(payload)}`)
  return payload.result.data!.json as T
}

export interface BenchUser {
  id: string
  email: string
  /** What a client sends as its bearer: the signed session token, as sign-in's `set-auth-token` gives it. */
  token: string
  /** The session token as stored in `session.token` (the replayed SQL looks the session up by it). */
  sessionToken: string
}

/** The stored token inside a signed bearer (`token.signature`). */
function storedToken(bearer: string): string {
  return decodeURIComponent(bearer).split('.')[0]!
}

const PASSWORD = 'correct horse battery staple'

async function authPost(baseUrl: string, path: string, body: unknown): Promise<Response> {
  // better-auth refuses a POST without an Origin outside tests; a browser on the server's own origin sends it.
  return fetch(`${baseUrl}/api/auth${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'origin': baseUrl }, body: JSON.stringify(body), signal: AbortSignal.timeout(REQUEST_DEADLINE_MS) })
}

/**
 * Signs a user up and in through better-auth's HTTP API. The verification e-mail
 * only goes to the server's log, so the bench marks the address verified in the
 * database, as following the link would.
 */
async function createUser(baseUrl: string, db: pg.Pool, email: string): Promise<BenchUser> {
  const signUp = await authPost(baseUrl, '/sign-up/email', { email, password: PASSWORD, name: email.split('@')[0] })
  if (!signUp.ok)
    throw new Error(`sign-up of ${email} failed: ${signUp.status} ${await signUp.text()}`)
  await db.query('UPDATE "user" SET "emailVerified" = true WHERE email = $1', [email.toLowerCase()])
  const signIn = await authPost(baseUrl, '/sign-in/email', { email, password: PASSWORD })
  const token = signIn.headers.get('set-auth-token')
  const body = await signIn.json() as { user?: { id: string } }
  if (!signIn.ok || !token || !body.user)
    throw new Error(`sign-in of ${email} failed: ${signIn.status}`)
  return { id: body.user.id, email, token, sessionToken: storedToken(token) }
}

/** better-auth's id and token alphabet and length (`generateId(32)`). */
function authId(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
  return Array.from(randomBytes(32), byte => alphabet[byte % alphabet.length]).join('')
}

/**
 * The bearer sign-in hands out (`set-auth-token`): the stored token, `.`, its
 * HMAC-SHA256 under the auth secret in base64 (better-call's signed cookie value,
 * not URL-encoded).
 */
export function signSessionToken(token: string, secret: string): string {
  return `${token}.${createHmac('sha256', secret).update(token).digest('base64')}`
}

/**
 * `count` verified users with a session each (bearers signed with `secret`, the
 * server's BETTER_AUTH_SECRET), written straight into better-auth's
 * tables the way its sign-up and sign-in would leave them (`user`, a credential
 * `account` holding a copy of `template`'s password hash, a `session`). A
 * sign-up and a sign-in each pay for an scrypt hash, which made setup take
 * longer than the scenarios; nothing measured depends on how a row was written,
 * and every request still authenticates with the signed bearer token as usual.
 */
export async function insertUsers(db: pg.Pool, template: BenchUser, count: number, prefix: string, secret = BENCH_AUTH_SECRET): Promise<BenchUser[]> {
  const users = Array.from({ length: count }, (_, index) => {
    const token = authId()
    return { id: authId(), email: `${prefix}-${index}@example.com`, sessionId: authId(), sessionToken: token, token: signSessionToken(token, secret) }
  })
  const client = await db.connect()
  try {
    await client.query('BEGIN')
    const { rows } = await client.query<{ password: string }>(`SELECT password FROM account WHERE "userId" = $1 AND "providerId" = 'credential'`, [template.id])
    const column = (key: 'id' | 'email' | 'sessionId' | 'sessionToken') => users.map(user => user[key])
    await client.query(
      `INSERT INTO "user" (id, name, email, "emailVerified", "createdAt", "updatedAt")
       SELECT id, split_part(email, '@', 1), email, true, now(), now() FROM unnest($1::text[], $2::text[]) AS u(id, email)`,
      [column('id'), column('email')],
    )
    await client.query(
      `INSERT INTO account (id, "accountId", "providerId", "userId", password, "createdAt", "updatedAt")
       SELECT md5(id || ':account'), id, 'credential', id, $2, now(), now() FROM unnest($1::text[]) AS u(id)`,
      [column('id'), rows[0]?.password ?? null],
    )
    await client.query(
      `INSERT INTO session (id, token, "userId", "expiresAt", "createdAt", "updatedAt", "userAgent")
       SELECT sid, token, id, now() + interval '7 days', now(), now(), 'airi-bench' FROM unnest($1::text[], $2::text[], $3::text[]) AS u(sid, token, id)`,
      [column('sessionId'), column('sessionToken'), column('id')],
    )
    await client.query('COMMIT')
  }
  catch (error) {
    await client.query('ROLLBACK').catch(() => {})
    throw error
  }
  finally {
    client.release()
  }
  return users.map(({ id, email, token, sessionToken }) => ({ id, email, token, sessionToken }))
}

export interface Deployment {
  admin: BenchUser
  users: BenchUser[]
  /** The alias the gateway serves, and the fake upstream's key behind it. */
  model: string
  upstreamKey: string
  ttsKey: string
  /** What the stt scenarios use; `error` when this checkout refused the STT config (one that predates it). */
  stt: { model: string, upstreamModel: string, key: string, streamingKey: string } | { error: string }
}

const BENCH_MODEL = 'chat'
const BENCH_STT_MODEL = 'stt'
/** Enough Flux that no user of the bench ever runs out. */
const BENCH_INITIAL_FLUX = 1_000_000_000

/** The deployment's speech-to-text set-up, or the reason this checkout has none (the stt scenarios then fail). */
export function sttOf(deployment: Deployment): Exclude<Deployment['stt'], { error: string }> {
  if ('error' in deployment.stt)
    throw new Error(`speech-to-text could not be configured on this checkout: ${deployment.stt.error}`)
  return deployment.stt
}

type SetConfig = (key: string, value: unknown) => Promise<unknown>
type Encrypt = (model: string, keyId: string, apiKey: string) => Promise<{ keyId: string, ciphertext: string }>

/** Transcriptions (`stt`) to the fake transcriber, streaming ones to the fake Realtime upstream. */
async function configureStt(set: SetConfig, encrypt: Encrypt, fakes: Fakes): Promise<Deployment['stt']> {
  const key = 'sk-bench-stt'
  const streamingKey = 'sk-bench-stt-stream'
  const upstreamModel = 'whisper-1'
  try {
    const [sealed, sealedStreaming] = await Promise.all([encrypt(BENCH_STT_MODEL, 'k0', key), encrypt('streaming-stt', 'k0', streamingKey)])
    await set('STT_UPSTREAMS', { defaultModel: BENCH_STT_MODEL, models: { [BENCH_STT_MODEL]: { adapter: 'openai-compatible', baseUrl: fakes.sttUrl, model: upstreamModel, keys: [{ id: sealed.keyId, ciphertext: sealed.ciphertext }] } } })
    await set('STREAMING_STT_UPSTREAM', { url: fakes.realtimeSttUrl, model: 'gpt-4o-transcribe', keys: [{ id: sealedStreaming.keyId, ciphertext: sealedStreaming.ciphertext }] })
  }
  catch (error) {
    // A checkout from before speech-to-text (a --server-root run) has no such entries: only the stt scenarios fail.
    return { error: (error as Error).message }
  }
  return { model: BENCH_STT_MODEL, upstreamModel, key, streamingKey }
}

/**
 * Configures a fresh deployment the way an operator would (admin procedures over
 * tRPC): users start with plenty of Flux, the gateway routes `chat` to the fake
 * upstream, streaming speech goes to the fake streaming upstream, transcriptions
 * to the fake transcription upstreams. The admin signs
 * up through better-auth's HTTP API; the `userCount` bench users are written
 * straight into its tables (`insertUsers`).
 */
export async function setUpDeployment(baseUrl: string, databaseUrl: string, fakes: Fakes, userCount: number): Promise<Deployment> {
  const db = new pg.Pool({ connectionString: databaseUrl, max: 2 })
  try {
    const admin = await createUser(baseUrl, db, BENCH_ADMIN_EMAIL)
    const set: SetConfig = (key, value) => trpcCall(baseUrl, admin.token, 'admin.config.set', { key, value }, 'mutation')
    const encrypt: Encrypt = (model, keyId, apiKey) =>
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
    const stt = await configureStt(set, encrypt, fakes)

    // The bench users' bearers are signed here: they must look exactly like the server's.
    if (signSessionToken(admin.sessionToken, BENCH_AUTH_SECRET) !== admin.token)
      throw new Error(`the server signs session tokens differently from signSessionToken (deployment.ts): ${admin.token} ≠ ${signSessionToken(admin.sessionToken, BENCH_AUTH_SECRET)}`)
    const users = await insertUsers(db, admin, userCount, `bench-${randomUUID().slice(0, 8)}`)
    // Open every account now (the first balance read does), so no scenario pays for
    // it; this also proves each token authenticates through the server's own path.
    let next = 0
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (next < users.length)
        await trpcCall(baseUrl, users[next++]!.token, 'flux.balance', undefined, 'query')
    }))
    return { admin, users, model: BENCH_MODEL, upstreamKey, ttsKey, stt }
  }
  finally {
    await db.end()
  }
}
