import { createHash } from 'node:crypto'

import { createLru } from '../lru.ts'
import type { RequestAuth } from '../context.ts'
import type { SessionRevocation } from './session-guard.ts'

export interface IdentityCacheOptions {
  /** Most identities kept; the least recently used go first. */
  maxEntries?: number
  /**
   * How long an identity is trusted without asking Postgres. Revocations and user
   * changes drop it at once (pub/sub); this only bounds a change whose message was lost.
   */
  ttlMs?: number
  now?: () => number
}

interface Entry {
  auth: RequestAuth
  /** When the credential stops authorizing by itself (session or token expiry). */
  until: number
}

/** The credentials of a request as a fixed-size key; the raw token is never kept. */
export function credentialKey(authorization: string, cookie: string): string {
  return createHash('sha256').update(authorization).update('\n').update(cookie).digest('base64url')
}

function deepFreeze(auth: RequestAuth): RequestAuth {
  Object.freeze(auth.user)
  Object.freeze(auth.session)
  return Object.freeze(auth)
}

/**
 * Resolved callers by credential, in this process only, so a signed-in request
 * costs no SQL. Entries are dropped by session or by user when the session guard
 * hears of a revocation or a user change on any instance.
 *
 * A resolution that read Postgres before such a change must not put the old
 * answer back: `begin` hands out the current generation, every drop starts a new
 * one, and `fill` is refused unless the generation is still the one its read began in.
 */
export function createIdentityCache({ maxEntries = 20_000, ttlMs = 30_000, now = Date.now }: IdentityCacheOptions = {}) {
  // Keys by session id and by user id, so a drop does not scan the cache.
  const bySession = new Map<string, Set<string>>()
  const byUser = new Map<string, Set<string>>()
  const unindex = (index: Map<string, Set<string>>, id: string, key: string) => {
    const keys = index.get(id)
    keys?.delete(key)
    if (keys?.size === 0)
      index.delete(id)
  }
  const index = (map: Map<string, Set<string>>, id: string, key: string) => {
    let keys = map.get(id)
    if (!keys)
      map.set(id, keys = new Set())
    keys.add(key)
  }
  const entries = createLru<string, Entry>(maxEntries, {
    ttl: ttlMs,
    // Evicted, expired, replaced or deleted: the indexes follow.
    dispose: (entry, key) => {
      unindex(bySession, entry.auth.session.id, key)
      unindex(byUser, entry.auth.user.id, key)
    },
  })
  let generation = 0

  return {
    /** The cached caller for these credentials, unless it expired. */
    get(key: string): RequestAuth | undefined {
      const entry = entries.get(key)
      if (!entry)
        return undefined
      if (entry.until <= now()) {
        entries.delete(key)
        return undefined
      }
      return entry.auth
    },

    /** Call before reading the source; pass the result to `fill`. */
    begin(): number {
      return generation
    },

    /** True while no drop happened since `begin` returned `since`. */
    current(since: number): boolean {
      return since === generation
    },

    /**
     * Keeps `auth` (frozen: requests share it) until `until` at the latest, unless
     * something was dropped since `since`.
     */
    fill(key: string, auth: RequestAuth, until: number, since: number): boolean {
      const left = until - now()
      if (since !== generation || left <= 0)
        return false
      entries.delete(key)
      entries.set(key, { auth: deepFreeze(auth), until }, { ttl: Math.min(ttlMs, left) })
      index(bySession, auth.session.id, key)
      index(byUser, auth.user.id, key)
      return true
    },

    /** Forgets every identity the revocation (or user change) concerns, and refuses fills that began before it. */
    drop(revocation: SessionRevocation): void {
      generation++
      const keys = revocation.sessionId && !revocation.userChanged ? bySession.get(revocation.sessionId) : byUser.get(revocation.userId)
      for (const key of [...keys ?? []])
        entries.delete(key)
    },

    get size(): number {
      return entries.size
    },
  }
}

export type IdentityCache = ReturnType<typeof createIdentityCache>
