import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import type { AppRouter } from '@airi/api'
import { createAiriClient, TRPCClientError, type AiriClient, type WebSocketConstructor } from '@airi/sdk'

import { service } from '../src/runtime.ts'
import { startTestServer, type TestServer } from './harness.ts'

let server: TestServer
const clients: AiriClient[] = []

beforeAll(async () => {
  server = await startTestServer()
  await server.listen()
})
afterAll(async () => {
  await Promise.all(clients.map(client => client.close()))
  await server.close()
})

function client(token?: string): AiriClient {
  const created = createAiriClient({ baseUrl: server.baseUrl, getToken: () => token, WebSocket: WebSocket as unknown as WebSocketConstructor })
  clients.push(created)
  return created
}

async function failure(promise: Promise<unknown>): Promise<TRPCClientError<AppRouter>> {
  const error = await promise.then(() => undefined, (e: unknown) => e)
  expect(error).toBeInstanceOf(TRPCClientError)
  return error as TRPCClientError<AppRouter>
}

function collect<T>(subscribe: (handlers: { onData: (value: T) => void, onComplete: () => void, onError: (error: unknown) => void }) => unknown): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const values: T[] = []
    subscribe({ onData: value => values.push(value), onComplete: () => resolve(values), onError: reject })
  })
}

describe('SDK end to end', () => {
  it('calls meta.info over HTTP', async () => {
    expect(await client().meta.info.query()).toEqual({ service: 'airi-server', version: service.version })
  })

  it('batches several queries into one HTTP request', async () => {
    const sdk = client()
    const [a, b] = await Promise.all([sdk.meta.info.query(), sdk.meta.info.query()])
    expect(a).toEqual(b)
  })

  it('receives meta.ticks over the WebSocket, with the token from the connection params', async () => {
    const anonymous = await collect<{ tick: number, at: Date, userId: string | null }>(handlers =>
      client().meta.ticks.subscribe({ count: 3, intervalMs: 20 }, handlers))
    expect(anonymous.map(value => value.tick)).toEqual([1, 2, 3])
    expect(anonymous[0]!.at).toBeInstanceOf(Date)
    expect(anonymous.every(value => value.userId === null)).toBe(true)

    const signedIn = await collect<{ userId: string | null }>(handlers =>
      client('member').meta.ticks.subscribe({ count: 2, intervalMs: 10 }, handlers))
    expect(signedIn.map(value => value.userId)).toEqual(['user-member', 'user-member'])
  })

  it('rejects bad subscription input with 400 naming the field', async () => {
    const error = await collect(handlers => client().meta.ticks.subscribe({ count: 1000, intervalMs: 10 }, handlers)).then(() => undefined, (e: unknown) => e) as TRPCClientError<AppRouter>
    expect(error.data?.code).toBe('BAD_REQUEST')
    expect(Object.keys(error.data?.fieldErrors ?? {})).toEqual(['count'])
  })
})

describe('procedure guards', () => {
  it('protected and admin procedures answer 401 without a user', async () => {
    const error = await failure(client().admin.config.list.query())
    expect(error.data).toMatchObject({ code: 'UNAUTHORIZED', httpStatus: 401 })
  })

  it('admin procedures answer 403 to a user not on ADMIN_EMAILS', async () => {
    const error = await failure(client('member').admin.config.list.query())
    expect(error.data).toMatchObject({ code: 'FORBIDDEN', httpStatus: 403 })
  })

  it('admin procedures answer 403 to an allowlisted admin whose e-mail is unverified', async () => {
    const error = await failure(client('unverifiedAdmin').admin.config.list.query())
    expect(error.data).toMatchObject({ code: 'FORBIDDEN', httpStatus: 403 })
  })

  it('an admin (allowlist matched case-insensitively) lists, sets and reads config', async () => {
    const admin = client('admin')
    const entries = await admin.admin.config.list.query()
    expect(entries.find(entry => entry.key === 'INITIAL_USER_FLUX')).toMatchObject({ value: 100, isSet: false })

    expect(await admin.admin.config.set.mutate({ key: 'INITIAL_USER_FLUX', value: 250 })).toEqual({ key: 'INITIAL_USER_FLUX', value: 250 })
    expect(await admin.admin.config.get.query({ key: 'INITIAL_USER_FLUX' })).toMatchObject({ value: 250, isSet: true, updatedBy: 'user-admin' })
    expect(await server.api.services.config.get('INITIAL_USER_FLUX')).toBe(250)
  })

  it('admin.config.set answers 400 for an unknown key (field named) and for an invalid value', async () => {
    const admin = client('admin')
    const unknownKey = await failure(admin.admin.config.set.mutate({ key: 'NOPE' as 'INITIAL_USER_FLUX', value: 1 }))
    expect(unknownKey.data).toMatchObject({ code: 'BAD_REQUEST', httpStatus: 400 })
    expect(Object.keys(unknownKey.data?.fieldErrors ?? {})).toEqual(['key'])

    const invalid = await failure(admin.admin.config.set.mutate({ key: 'FLUX_PER_REQUEST', value: 'lots' }))
    expect(invalid.data).toMatchObject({ code: 'BAD_REQUEST', httpStatus: 400, apiCode: 'INVALID_CONFIG_VALUE', details: { key: 'FLUX_PER_REQUEST' } })
  })
})
