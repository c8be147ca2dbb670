import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient } from '@airi/sdk'
import { startFakeStreamingTtsUpstream, type FakeStreamingTtsUpstream } from '@airi/tooling/fakes/streaming-tts-upstream'

import { ADMIN_EMAIL, createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

// The demo's streaming bridge (the fake) has no voice catalogue: every chat view that
// opened logged the 404 with a stack trace. An upstream answering an error status is
// the outside world misbehaving, one warning line; a stack is for our own bugs.

interface LogLine { level: number, msg?: string, [field: string]: unknown }
/** Every line the services logged at warn or above, as pino wrote it (JSON, serializers applied). */
const logged: LogLine[] = []
const recordingLogger = pino({ level: 'warn' }, { write: (line: string) => logged.push(JSON.parse(line) as LogLine) })

let server: TestServer
let bridge: FakeStreamingTtsUpstream
let user: TestUser

beforeAll(async () => {
  ;[server, bridge] = await Promise.all([startTestServer({ logger: recordingLogger }), startFakeStreamingTtsUpstream()])
  const operator = await createVerifiedUser(server, ADMIN_EMAIL)
  const admin = createAiriClient({ baseUrl: server.baseUrl, getToken: () => operator.token })
  const { keyId, ciphertext } = await admin.admin.llm.encryptKey.mutate({ model: 'streaming-tts', keyId: 'k0', apiKey: 'sk-stream' })
  await admin.admin.config.set.mutate({ key: 'STREAMING_TTS_UPSTREAM', value: { url: bridge.url, keys: [{ id: keyId, ciphertext }], models: [{ id: 'demo-streaming-tts' }] } })
  user = await createVerifiedUser(server)
})
afterAll(async () => {
  await server?.close()
  await bridge?.close()
})

describe('a streaming bridge without a voice catalogue (404)', () => {
  it('answers an empty list and logs one warning line with the status and no stack, per request', async () => {
    logged.length = 0
    for (let view = 0; view < 3; view++) {
      const response = await fetch(`${server.baseUrl}/api/v1/audio/voices/streaming?model=demo-streaming-tts`, { headers: { authorization: `Bearer ${user.token}` } })
      expect(response.status).toBe(200)
      expect(await response.json()).toEqual({ voices: [] })
    }

    const warnings = logged.filter(line => line.msg === 'streaming TTS voice catalogue unavailable; answering an empty list')
    expect(warnings, JSON.stringify(logged)).toHaveLength(3)
    for (const warning of warnings) {
      expect(warning).toMatchObject({ level: 40, status: 404, upstream: new URL(bridge.url).origin.replace('ws:', 'http:') })
      expect(JSON.stringify(warning)).not.toMatch(/"stack"|\n\s+at /)
    }
    // Nothing else was logged for it (no second line per key or per request).
    expect(logged).toHaveLength(3)
  })
})
