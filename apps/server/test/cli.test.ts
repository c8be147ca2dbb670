import { spawn } from 'node:child_process'
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { findFreePort } from '@airi/db'
import { createAiriClient } from '@airi/sdk'
import { DEFAULT_CONTENT, startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { testRedisPrefix } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { operatorPlugin } from '../src/plugins/operator.ts'
import { createVerifiedUser, failure, signIn, startTestServer, TEST_LLM_MASTER_KEY, uniqueEmail, type TestServer } from './harness.ts'
import { buildLauncher, serverDir, startServerProcess, type ServerProcess } from './server-process.ts'

/**
 * `pnpm airi` as an operator runs it: a child process (`node launch.js airi …`),
 * against the real server on Postgres and Redis, and against a server on the
 * embedded default, to which it sends its commands.
 */

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs `node launch.js airi …args` with only `env` (and PATH); stdin is `stdin`, or empty. */
function airi(args: string[], env: Record<string, string>, stdin = ''): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['launch.js', 'airi', ...args], { cwd: serverDir, env: { PATH: process.env.PATH, NODE_ENV: 'development', ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk))
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk))
    child.once('error', reject)
    child.once('close', code => resolve({ code, stdout, stderr }))
    child.stdin.end(stdin)
  })
}

const expectNoStack = (run: Run) => expect(run.stderr).not.toMatch(/^\s+at /m)

// What a first `pnpm airi` (and, for the embedded server, `pnpm start`) builds, so the runs below reuse it.
beforeAll(() => buildLauncher(['airi']), 300_000)

describe('pnpm airi against DATABASE_URL and REDIS_URL, with a server running', () => {
  const redisPrefix = testRedisPrefix()
  let dataDir: string
  let server: TestServer
  let upstream: FakeUpstream
  let env: Record<string, string>

  const operatorToken = 'operator-token-0123456789-0123456789-abcdef'

  beforeAll(async () => {
    // With the endpoint the embedded default serves to the CLI (main.ts), to try it directly below.
    dataDir = mkdtempSync(join(tmpdir(), 'airi-cli-'))
    server = await startTestServer({ redisPrefix, extend: (app, api) => void app.register(operatorPlugin, { prefix: '/api/v1', api, token: operatorToken }) })
    upstream = await startFakeOpenAIUpstream()
    env = {
      DATABASE_URL: server.database.url,
      REDIS_URL: inject('redisUrl'),
      REDIS_KEY_PREFIX: redisPrefix,
      // The server's master key, so it can open the keys the CLI seals.
      LLM_ROUTER_MASTER_KEY: TEST_LLM_MASTER_KEY.toString('base64'),
      // Nothing of the CLI's (generated secrets) lands in the workspace's .data/.
      DATA_DIR: dataDir,
    }
  })
  afterAll(async () => {
    await server?.close()
    await upstream?.close()
    if (dataDir)
      rmSync(dataDir, { recursive: true, force: true })
  })

  const KEY = 'sk-cli-upstream-key-0123456789wxyz'

  it('llm add --api-key-env: the running server routes the alias within a second, to the upstream, with that key', async () => {
    const user = await createVerifiedUser(server)
    const client = new OpenAI({ apiKey: user.token, baseURL: `${server.baseUrl}/api/v1/openai`, maxRetries: 0 })
    const chat = () => client.chat.completions.create({ model: 'cli-chat', messages: [{ role: 'user', content: 'Hello?' }] })
    await expect(chat(), 'the alias exists before llm add').rejects.toThrow()

    const run = await airi(['llm', 'add', 'cli-chat', '--base-url', upstream.url, '--model', 'upstream-model', '--api-key-env', 'CLI_TEST_KEY'], { ...env, CLI_TEST_KEY: KEY })
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toContain('saved llm alias cli-chat (the default)')
    expect(run.stdout).toContain('••••wxyz')

    let answer: string | null | undefined
    await until(() => chat().then(completion => (answer = completion.choices[0]!.message.content, true), () => false), 'the server to route cli-chat', 1_000)
    expect(answer).toBe(DEFAULT_CONTENT)
    expect(upstream.requests.at(-1)).toMatchObject({ key: KEY, body: { model: 'upstream-model' } })
    expect(`${run.stdout}${run.stderr}`).not.toContain(KEY)
    const stored = await server.database.db.selectFrom('config_entries').select('value').where('key', '=', 'LLM_ROUTER_CONFIG').executeTakeFirstOrThrow()
    expect(JSON.stringify(stored.value)).not.toContain(KEY)
  })

  it('llm list --json shows each key as •••• and its last four characters, never the key', async () => {
    const run = await airi(['llm', 'list', '--json'], env)
    expect(run.code, run.stderr).toBe(0)
    const list = JSON.parse(run.stdout) as { defaultModel: string, models: Array<{ alias: string, upstreams: Array<{ baseUrl: string, keys: Array<{ hint: string }> }> }> }
    expect(list.defaultModel).toBe('cli-chat')
    expect(list.models).toMatchObject([{ alias: 'cli-chat', upstreams: [{ baseUrl: upstream.url, keys: [{ hint: '••••wxyz' }] }] }])
    expect(run.stdout).not.toContain(KEY)
  })

  it('takes the key from stdin when no variable is named, and keeps the stored key when stdin is empty', async () => {
    const piped = await airi(['llm', 'add', 'piped', '--base-url', upstream.url, '--model', 'm1'], env, 'sk-piped-key-000000001111\n')
    expect(piped.code, piped.stderr).toBe(0)
    expect(piped.stdout).toContain('••••1111')
    const kept = await airi(['llm', 'add', 'piped', '--base-url', upstream.url, '--model', 'm2', '--json'], env)
    expect(kept.code, kept.stderr).toBe(0)
    expect(JSON.parse(kept.stdout)).toMatchObject({ alias: 'piped', upstreams: [{ model: 'm2', keys: [{ hint: '••••1111' }] }] })

    const missing = await airi(['llm', 'add', 'no-key', '--base-url', upstream.url, '--model', 'm'], env)
    expect(missing.code).toBe(1)
    expect(missing.stderr.trim()).toBe('error: no-key is a new llm alias: give its API key')
  })

  it('config set with an invalid value exits 1 naming each field, and stores nothing', async () => {
    const before = await airi(['config', 'get', 'TTS_UPSTREAMS', '--json'], env)
    expect(JSON.parse(before.stdout)).toMatchObject({ key: 'TTS_UPSTREAMS', isSet: false })
    const value = { models: { voice: { adapter: 'openai-compatible', baseUrl: 'ftp://127.0.0.1/v1', model: 'tts-1', keys: [{ id: 'k0', ciphertext: 'x' }] } } }

    const run = await airi(['config', 'set', 'TTS_UPSTREAMS', JSON.stringify(value)], env)
    expect(run.code).toBe(1)
    expect(run.stderr).toContain('error: Invalid value for TTS_UPSTREAMS')
    expect(run.stderr).toContain('  models.voice.baseUrl: must be an http:// or https:// URL')
    expectNoStack(run)
    const after = await airi(['config', 'get', 'TTS_UPSTREAMS', '--json'], env)
    expect(JSON.parse(after.stdout)).toMatchObject({ isSet: false })
  })

  it('config set stores a valid value, which config get then shows', async () => {
    const run = await airi(['config', 'set', 'INITIAL_USER_FLUX', '321'], env)
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout.trim()).toBe('stored INITIAL_USER_FLUX: 321')
    expect(await server.api.services.config.get('INITIAL_USER_FLUX')).toBe(321)
  })

  it('key seal prints a sealed key that config set takes for its alias\'s entry, and refuses under another alias', async () => {
    const key = 'sk-streaming-tts-key-0123456789'
    const sealed = await airi(['key', 'seal', 'streaming-tts', '--api-key-env', 'TTS_KEY'], { ...env, TTS_KEY: key })
    expect(sealed.code, sealed.stderr).toBe(0)
    expect(sealed.stdout.trim().split('\n')).toHaveLength(1)
    expect(sealed.stderr).toContain('pnpm airi config set STREAMING_TTS_UPSTREAM')
    const entry = (keys: unknown[]) => JSON.stringify({ url: 'wss://tts.example.com/ws', keys, models: [{ id: 'voice-1' }] })
    const set = await airi(['config', 'set', 'STREAMING_TTS_UPSTREAM', entry([JSON.parse(sealed.stdout)])], env)
    expect(set.code, set.stderr).toBe(0)
    const stored = () => server.api.services.config.describe('STREAMING_TTS_UPSTREAM')
    expect(await stored()).toMatchObject({ isSet: true, value: { keys: [{ id: 'primary' }] } })
    expect(`${sealed.stdout}${sealed.stderr}${set.stdout}${set.stderr}`).not.toContain(key)

    const other = await airi(['key', 'seal', 'streaming-stt', '--key-id', 'k2', '--api-key-env', 'TTS_KEY', '--json'], { ...env, TTS_KEY: key })
    expect(other.code, other.stderr).toBe(0)
    expect(JSON.parse(other.stdout)).toEqual({ id: 'k2', ciphertext: expect.any(String) })
    const refused = await airi(['config', 'set', 'STREAMING_TTS_UPSTREAM', entry([JSON.parse(other.stdout)])], env)
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain('  keys.0.ciphertext: The ciphertext does not decrypt under this server\'s master key for this alias and key id')
    expect(`${other.stdout}${other.stderr}${refused.stderr}`).not.toContain(key)
    expect(await stored(), 'the refused value is not stored').toMatchObject({ value: { keys: [{ id: 'primary' }] } })
  })

  it('flux grant to a known and an unknown e-mail reports each, credits the known one and exits 1', async () => {
    const known = await createVerifiedUser(server)
    const unknown = uniqueEmail('nobody')
    const before = await server.api.services.billing.getBalance(known.id)

    const run = await airi(['flux', 'grant', '--email', `${known.email},${unknown}`, '--amount', '25', '--reason', 'cli test', '--json'], env)
    expect(run.code).toBe(1)
    const report = JSON.parse(run.stdout) as { results: Array<{ email: string, status: string, reason?: string }> }
    expect(report.results).toMatchObject([{ email: known.email, status: 'granted' }, { email: unknown, status: 'skipped', reason: 'not_found' }])
    expect(await server.api.services.billing.getBalance(known.id)).toBe(before + 25)

    const human = await airi(['flux', 'grant', '--email', known.email, '--email', unknown, '--amount', '5', '--reason', 'cli test', '--dry-run'], env)
    expect(human.code).toBe(1)
    expect(human.stdout).toMatch(new RegExp(`^${known.email.replace('.', '\\.')}\\s+would_grant`, 'm'))
    expect(human.stdout).toMatch(/skipped \(not_found\)\s+no account has this e-mail/)
    expect(await server.api.services.billing.getBalance(known.id)).toBe(before + 25)
  })

  it('admin add makes a user an administrator at once', async () => {
    const user = await createVerifiedUser(server)
    const client = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
    try {
      expect((await failure(client.admin.config.list.query())).data?.code).toBe('FORBIDDEN')
      const run = await airi(['admin', 'add', user.email], env)
      expect(run.code, run.stderr).toBe(0)
      expect(run.stdout.trim()).toBe(`${user.email} is now an administrator`)
      expect((await client.admin.config.list.query()).length).toBeGreaterThan(0)

      const list = await airi(['admin', 'list', '--json'], env)
      expect(JSON.parse(list.stdout)).toContainEqual(expect.objectContaining({ email: user.email, source: 'stored' }))
    }
    finally {
      await client.close()
    }
  })

  it('user create --verified makes an account that signs in; a generated password is printed once', async () => {
    const email = uniqueEmail('cli')
    const password = 'a long cli password 42'
    const run = await airi(['user', 'create', '--email', email, '--verified', '--password-env', 'CLI_PASSWORD'], { ...env, CLI_PASSWORD: password })
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toContain(`created ${email}`)
    expect(run.stdout).not.toContain(password)
    await signIn(server, email, password)

    const generated = await airi(['user', 'create', '--email', uniqueEmail('cli'), '--verified', '--json'], env)
    expect(generated.code, generated.stderr).toBe(0)
    const created = JSON.parse(generated.stdout) as { email: string, emailVerified: boolean, generatedPassword: string }
    expect(created.emailVerified).toBe(true)
    await signIn(server, created.email, created.generatedPassword)
  })
  it('POST /api/v1/operator runs a command only for a loopback peer with the token', async () => {
    const post = (authorization: string, payload: object, remoteAddress = '127.0.0.1') =>
      server.app.inject({ method: 'POST', url: '/api/v1/operator', remoteAddress, headers: { authorization }, payload })
    const get = { command: 'config.get', input: { key: 'FLUX_PER_REQUEST' } }

    expect((await post(`Bearer ${operatorToken}`, get, '192.0.2.10')).json()).toMatchObject({ error: { code: 'FORBIDDEN' } })
    expect((await post(`Bearer ${operatorToken.slice(0, -1)}x`, get)).statusCode).toBe(401)
    expect((await post('', get)).statusCode).toBe(401)
    const answered = await post(`Bearer ${operatorToken}`, get, '::ffff:127.0.0.1')
    expect(answered.json()).toEqual({ result: expect.objectContaining({ key: 'FLUX_PER_REQUEST', isSet: false }) })

    expect((await post(`Bearer ${operatorToken}`, { command: 'nope', input: {} })).json()).toMatchObject({ error: { code: 'UNKNOWN_COMMAND' } })
    const invalid = await post(`Bearer ${operatorToken}`, { command: 'config.get', input: { key: 'NOT_AN_ENTRY' } })
    expect(invalid.statusCode).toBe(400)
    expect(invalid.json()).toMatchObject({ error: { code: 'INVALID_INPUT', details: { issues: [{ path: ['key'] }] } } })
  })
})

describe('pnpm airi given a mistake', () => {
  // None of these reaches a database: the command line is refused first.
  const env = { DATABASE_URL: 'postgres://127.0.0.1:1/none' }

  it('exits 2 with the usage on an unknown command', async () => {
    const run = await airi(['frobnicate'], env)
    expect(run.code).toBe(2)
    expect(run.stderr).toContain('error: unknown command \'frobnicate\'')
    expect(run.stderr).toContain('Usage: airi [options] [command]')
    expect(run.stdout).toBe('')
  })

  it('exits 2 with the usage on an unknown option or a missing argument', async () => {
    const unknown = await airi(['llm', 'list', '--verbose'], env)
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toContain('error: unknown option \'--verbose\'')
    expect(unknown.stderr).toContain('Usage: airi llm list [options]')

    const missing = await airi(['llm', 'add', 'chat', '--model', 'm'], env)
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain('error: required option \'--base-url <url>\' not specified')
  })

  it('exits 0 with the help on stdout for --help', async () => {
    const run = await airi(['flux', 'grant', '--help'], env)
    expect(run.code).toBe(0)
    expect(run.stdout).toContain('Usage: airi flux grant [options]')
  })

  it('exits 2 when --api-key-env names a variable that is not set', async () => {
    const run = await airi(['llm', 'add', 'chat', '--base-url', 'https://example.com/v1', '--model', 'm', '--api-key-env', 'NOT_SET_ANYWHERE'], env)
    expect(run.code).toBe(2)
    expect(run.stderr.trim()).toBe('error: --api-key-env NOT_SET_ANYWHERE: the environment variable NOT_SET_ANYWHERE is not set or empty')
  })
})

it('says in one line, without the password or a stack trace, that the database cannot be reached', async () => {
  const port = await findFreePort()
  const run = await airi(['llm', 'list'], { DATABASE_URL: `postgres://airi:hunter2-secret@127.0.0.1:${port}/airi` })
  expect(run.code).toBe(1)
  expect(run.stderr.trim()).toBe(`cannot reach the database at postgres://127.0.0.1:${port}/airi (connect ECONNREFUSED 127.0.0.1:${port}): is it running, and is DATABASE_URL right?`)
  expect(run.stdout).toBe('')
})

describe('pnpm airi while a server holds the embedded database', () => {
  let dataDir: string
  let upstream: FakeUpstream
  let server: ServerProcess | undefined

  beforeAll(async () => {
    buildLauncher(['main'])
    dataDir = mkdtempSync(join(tmpdir(), 'airi-cli-embedded-'))
    // Under root, Postgres runs as the `postgres` user, which must reach the cluster inside.
    chmodSync(dataDir, 0o755)
    upstream = await startFakeOpenAIUpstream()
  }, 300_000)
  afterAll(async () => {
    await server?.stop()
    await upstream?.close()
    if (dataDir)
      rmSync(dataDir, { recursive: true, force: true })
  })

  it('sends its commands to that server, which applies them; once it stops, runs them itself', async () => {
    // On the embedded default; ready once it has written server.json, which it does after it listens.
    server = await startServerProcess({ NODE_ENV: 'development', DATA_DIR: dataDir }, () => existsSync(join(dataDir, 'server.json')))
    const env = { DATA_DIR: dataDir }
    const forwarding = `a server is running on ${dataDir} (pid `

    const email = 'embedded@example.com'
    const password = 'a long embedded password'
    const created = await airi(['user', 'create', '--email', email, '--verified', '--password-env', 'PW'], { ...env, PW: password })
    expect(created.code, created.stderr).toBe(0)
    expect(created.stderr).toContain(forwarding)

    const key = 'sk-embedded-key-00000000abcd'
    const added = await airi(['llm', 'add', 'fwd', '--base-url', upstream.url, '--model', 'upstream-model', '--api-key-env', 'KEY'], { ...env, KEY: key })
    expect(added.code, added.stderr).toBe(0)
    expect(added.stderr).toContain(forwarding)
    expect(`${added.stdout}${added.stderr}`).not.toContain(key)

    // better-auth takes a sign-in only from a trusted origin; the server trusts its own.
    const signedIn = await fetch(`${server.baseUrl}/api/auth/sign-in/email`, { method: 'POST', headers: { 'content-type': 'application/json', 'origin': server.baseUrl }, body: JSON.stringify({ email, password }) })
    expect(signedIn.ok, await signedIn.clone().text()).toBe(true)
    const client = new OpenAI({ apiKey: signedIn.headers.get('set-auth-token')!, baseURL: `${server.baseUrl}/api/v1/openai`, maxRetries: 0 })
    const completion = await client.chat.completions.create({ model: 'fwd', messages: [{ role: 'user', content: 'Hello?' }] })
    expect(completion.choices[0]!.message.content).toBe(DEFAULT_CONTENT)
    expect(upstream.requests.at(-1)).toMatchObject({ key, body: { model: 'upstream-model' } })
    expect(server.output()).not.toContain(key)

    expect(await server.stop(), server.output()).toBe(0)
    expect(existsSync(join(dataDir, 'server.json')), 'server.json is deleted at shutdown').toBe(false)
    const listed = await airi(['llm', 'list', '--json'], env)
    expect(listed.code, listed.stderr).toBe(0)
    expect(listed.stderr).not.toContain('a server is running')
    expect(JSON.parse(listed.stdout)).toMatchObject({ defaultModel: 'fwd', models: [{ alias: 'fwd', upstreams: [{ keys: [{ hint: '••••abcd' }] }] }] })
  }, 240_000)
})
