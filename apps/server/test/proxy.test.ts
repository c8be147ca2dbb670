import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { EnvError, parseEnv } from '../src/env.ts'
import { startTestServer, type TestServer, type TestServerOptions } from './harness.ts'

// The test client reaches the server from 127.0.0.1: that is "the load balancer".
const LIMIT = 2

/** A server whose /api/auth/* allows LIMIT requests per client a minute, and which tells a caller the address it saw. */
function serverBehind(trustProxy: TestServerOptions['trustProxy']): Promise<TestServer> {
  return startTestServer({
    redisUrl: false,
    authRateLimitPerMinute: LIMIT,
    trustProxy,
    extend: (app) => {
      app.get('/test/ip', async request => ({ ip: request.ip }))
    },
  })
}

async function authStatus(server: TestServer, forwardedFor: string): Promise<number> {
  return (await fetch(`${server.baseUrl}/api/auth/ok`, { headers: { 'x-forwarded-for': forwardedFor } })).status
}

async function seenIp(server: TestServer, forwardedFor?: string): Promise<string> {
  const response = await fetch(`${server.baseUrl}/test/ip`, { headers: forwardedFor ? { 'x-forwarded-for': forwardedFor } : {} })
  return (await response.json() as { ip: string }).ip
}

describe('without TRUST_PROXY', () => {
  let server: TestServer
  beforeAll(async () => {
    server = await serverBehind(undefined)
  })
  afterAll(() => server.close())

  it('ignores a spoofed X-Forwarded-For: the peer address is the client, for the rate limit too', async () => {
    expect(await seenIp(server, '198.51.100.1')).toBe('127.0.0.1')
    // Every request below comes from one peer; a new forwarded address each time does not buy a new window.
    const statuses = []
    for (let i = 0; i < LIMIT + 1; i++)
      statuses.push(await authStatus(server, `198.51.100.${i + 1}`))
    expect(statuses).toEqual([200, 200, 429])
  })
})

describe('with TRUST_PROXY set to the load balancer\'s address', () => {
  let server: TestServer
  beforeAll(async () => {
    server = await serverBehind(['127.0.0.1'])
  })
  afterAll(() => server.close())

  it('sees the client address the load balancer forwards', async () => {
    expect(await seenIp(server, '203.0.113.9')).toBe('203.0.113.9')
    expect(await seenIp(server)).toBe('127.0.0.1')
    // What a client wrote into the header before it reached the balancer is not believed:
    // the first untrusted hop from the right is the client.
    expect(await seenIp(server, '10.0.0.1, 203.0.113.9')).toBe('203.0.113.9')
  })

  it('gives two clients behind one balancer separate auth rate-limit windows', async () => {
    const first = []
    for (let i = 0; i < LIMIT + 1; i++)
      first.push(await authStatus(server, '203.0.113.20'))
    expect(first).toEqual([200, 200, 429])
    expect(await authStatus(server, '203.0.113.21')).toBe(200)
  })
})

describe('with TRUST_PROXY as a hop count', () => {
  let server: TestServer
  beforeAll(async () => {
    server = await serverBehind(1)
  })
  afterAll(() => server.close())

  it('takes the address the nearest proxy appended', async () => {
    expect(await seenIp(server, '10.0.0.1, 203.0.113.9')).toBe('203.0.113.9')
  })
})

describe('TRUST_PROXY', () => {
  it('is unset by default, a hop count when a number, otherwise a list of addresses and ranges', () => {
    expect(parseEnv({}).TRUST_PROXY).toBeUndefined()
    expect(parseEnv({ TRUST_PROXY: '0' }).TRUST_PROXY).toBeUndefined()
    expect(parseEnv({ TRUST_PROXY: '2' }).TRUST_PROXY).toBe(2)
    expect(parseEnv({ TRUST_PROXY: ' 10.0.0.0/8, 192.0.2.7 ,fd00::/8,::1 ' }).TRUST_PROXY).toEqual(['10.0.0.0/8', '192.0.2.7', 'fd00::/8', '::1'])
    expect(parseEnv({ TRUST_PROXY: 'loopback,uniquelocal' }).TRUST_PROXY).toEqual(['loopback', 'uniquelocal'])
  })

  it('refuses true and anything that is not an address or range, naming the variable', () => {
    for (const value of ['true', 'proxy.internal', '10.0.0.0/33', '::1/129', '10.0.0.1/8/1', '-1']) {
      const error = (() => {
        try {
          parseEnv({ TRUST_PROXY: value })
        }
        catch (e) {
          return e
        }
      })() as EnvError
      expect(error, value).toBeInstanceOf(EnvError)
      expect(error.problems.map(problem => problem.split(':')[0]), value).toEqual(['TRUST_PROXY'])
    }
  })
})
