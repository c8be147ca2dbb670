import { describe, expect, it } from 'vitest'

import type { RequestAuth } from '../context.ts'
import { createIdentityCache, credentialKey } from './identity-cache.ts'

let clock = 1_000_000
const now = () => clock

function caller(userId: string, sessionId: string, name = 'Someone'): RequestAuth {
  return {
    user: { id: userId, email: `${userId}@example.com`, emailVerified: true, name },
    session: { id: sessionId, userId, expiresAt: new Date(clock + 3_600_000) },
  }
}
const later = () => clock + 3_600_000

describe('identity cache', () => {
  it('refuses a fill that began before a revocation, so a slow read cannot bring a revoked session back', () => {
    const cache = createIdentityCache({ now })
    const key = credentialKey('Bearer token-1', '')
    const since = cache.begin()
    // The revocation arrives while the resolver is still reading Postgres.
    cache.drop({ userId: 'u1', sessionId: 's1' })
    expect(cache.current(since)).toBe(false)
    expect(cache.fill(key, caller('u1', 's1'), later(), since)).toBe(false)
    expect(cache.get(key)).toBeUndefined()

    // A read that began after it fills.
    expect(cache.fill(key, caller('u1', 's1'), later(), cache.begin())).toBe(true)
    expect(cache.get(key)?.user.id).toBe('u1')
  })

  it('drops by session, by user, and on user changes, and leaves other callers alone', () => {
    const cache = createIdentityCache({ now })
    const fill = (key: string, auth: RequestAuth) => cache.fill(key, auth, later(), cache.begin())
    fill('session-token', caller('u1', 's1'))
    fill('jwt-for-s1', caller('u1', 's1'))
    fill('other-session', caller('u1', 's2'))
    fill('other-user', caller('u2', 's3'))

    cache.drop({ userId: 'u1', sessionId: 's1' })
    expect(cache.get('session-token')).toBeUndefined()
    expect(cache.get('jwt-for-s1')).toBeUndefined()
    expect(cache.get('other-session')?.session.id).toBe('s2')

    cache.drop({ userId: 'u1', sessionId: 's2', userChanged: true })
    expect(cache.get('other-session')).toBeUndefined()
    fill('other-session', caller('u1', 's2', 'Renamed'))
    cache.drop({ userId: 'u1' })
    expect(cache.get('other-session')).toBeUndefined()
    expect(cache.get('other-user')?.user.id).toBe('u2')
  })

  it('never serves a caller past its session or token expiry', () => {
    const cache = createIdentityCache({ now, ttlMs: 30_000 })
    cache.fill('short', caller('u1', 's1'), clock + 1_000, cache.begin())
    cache.fill('long', caller('u2', 's2'), later(), cache.begin())
    expect(cache.get('short')).toBeDefined()
    clock += 1_000
    expect(cache.get('short')).toBeUndefined()
    expect(cache.fill('expired', caller('u3', 's3'), clock, cache.begin())).toBe(false)
    expect(cache.get('long')).toBeDefined()
  })

  it('keeps what it shares frozen', () => {
    const cache = createIdentityCache({ now })
    cache.fill('key', caller('u1', 's1'), later(), cache.begin())
    const auth = cache.get('key')!
    expect(Object.isFrozen(auth.user) && Object.isFrozen(auth.session)).toBe(true)
  })
})
