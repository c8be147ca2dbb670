import { z } from 'zod'

import type { Db } from '@airi/db'

import { createLru } from '../lru.ts'
import { channels } from '../adapters/keys.ts'
import { pubsubMessage } from '../adapters/messages.ts'
import type { PubSub, Unsubscribe } from '../adapters/ports.ts'
import type { AuthSession } from '../context.ts'
import type { Logger } from '../logger.ts'

/**
 * "These credentials may have stopped authorizing": a session, or every session of
 * a user; or, with `userChanged`, "this user's row changed" (name, e-mail,
 * verification), which ends no session but makes cached identities stale.
 */
export interface SessionRevocation {
  userId: string
  /** Absent: every session of the user (account deleted). */
  sessionId?: string
  /** Only the user row changed; sessions still authorize. */
  userChanged?: boolean
}

const revocationMessage = pubsubMessage<SessionRevocation>(z.object({
  userId: z.string().min(1),
  sessionId: z.string().min(1).optional(),
  userChanged: z.boolean().optional(),
}), 'session revocation')

interface Watcher {
  session: AuthSession
  onRevoked: () => void
}

export interface SessionGuardOptions {
  db: Db
  pubsub: PubSub
  logger: Logger
  /** How long a session's state is trusted before Postgres is asked again. */
  cacheTtlMs?: number
  /** Told of every revocation and user change, this instance's and the others' (the identity cache drops entries). */
  onRevocation?: (revocation: SessionRevocation) => void
  now?: () => number
}

/** A session id the resolver made up for a JWT without `sid`: nothing in Postgres to re-check. */
const isUnboundJwt = (session: AuthSession) => session.id.startsWith('jwt:')

/** setTimeout's largest delay; longer expiries are re-armed when it fires. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * Keeps long-lived connections (tRPC over WebSocket, the TTS socket) honest: a
 * call on an old socket is authorized against the session's current state (cached
 * for a few seconds), and live subscriptions end when the session is revoked on
 * any instance (pub/sub) or expires (a timer at its expiry).
 */
export function createSessionGuard({ db, pubsub, logger, cacheTtlMs = 5_000, onRevocation, now = Date.now }: SessionGuardOptions) {
  // Session id → its owner and expiry in Postgres (null when the row is gone).
  const states = createLru<string, { userId: string, expiresAt: number | null }>(50_000, { ttl: cacheTtlMs })
  const watchers = new Map<string, Set<Watcher>>()
  let subscription: Promise<Unsubscribe> | undefined
  const groups = new Map<string, { listeners: Set<() => void>, stop: () => void }>()

  async function rowExpiry(session: AuthSession): Promise<number | null> {
    const cached = states.get(session.id)
    if (cached)
      return cached.expiresAt
    const row = await db.selectFrom('session').select('expiresAt').where('id', '=', session.id).executeTakeFirst()
    const expiresAt = row ? new Date(row.expiresAt).getTime() : null
    states.set(session.id, { userId: session.userId, expiresAt })
    return expiresAt
  }

  /** When this session stops authorizing by itself, or null when it already has. */
  async function activeUntil(session: AuthSession): Promise<number | null> {
    const tokenExpiry = session.tokenExpiresAt?.getTime() ?? Number.POSITIVE_INFINITY
    if (tokenExpiry <= now())
      return null
    if (isUnboundJwt(session))
      return tokenExpiry
    const expiresAt = await rowExpiry(session)
    if (expiresAt === null || expiresAt <= now())
      return null
    return Math.min(expiresAt, tokenExpiry)
  }

  function forget(revocation: SessionRevocation): void {
    if (revocation.sessionId)
      return void states.delete(revocation.sessionId)
    // A whole user is rare (account deletion): a scan of the bounded cache is fine.
    for (const [sessionId, state] of states.entries()) {
      if (state.userId === revocation.userId)
        states.delete(sessionId)
    }
  }

  /** Re-checks every watcher the revocation may concern; ends those whose session is gone. */
  function recheck(revocation: SessionRevocation): void {
    onRevocation?.(revocation)
    if (revocation.userChanged)
      return
    forget(revocation)
    const concerned = revocation.sessionId
      ? [...(watchers.get(revocation.sessionId) ?? [])]
      : [...watchers.values()].flatMap(set => [...set]).filter(watcher => watcher.session.userId === revocation.userId)
    for (const watcher of concerned) {
      activeUntil(watcher.session).then((until) => {
        if (until === null)
          watcher.onRevoked()
      }, (error: unknown) => logger.warn({ err: error, sessionId: watcher.session.id }, 'could not re-check a revoked session'))
    }
  }

  return {
    /** Subscribes to revocations from every instance. */
    async start(): Promise<void> {
      subscription ??= pubsub.subscribe(channels.sessionRevoked(), (raw) => {
        const revocation = revocationMessage.parse(raw, logger)
        if (revocation)
          recheck(revocation)
      })
      await subscription
    },

    /** True while the session still authorizes: not expired, not signed out or revoked. */
    async isActive(session: AuthSession): Promise<boolean> {
      return (await activeUntil(session)) !== null
    },

    /**
     * Tells every instance that these credentials may no longer authorize. Called
     * when better-auth deletes a session (sign-out, revocation, password reset or
     * change) or a user, and (`userChanged`) when it updates a user.
     */
    async revoke(revocation: SessionRevocation): Promise<void> {
      // This instance at once, even if the pub/sub store is unreachable.
      recheck(revocation)
      await pubsub.publish(channels.sessionRevoked(), revocationMessage.create(revocation))
    },

    /**
     * Calls `onRevoked` once when the session is revoked or reaches its expiry,
     * until the returned function is called. The watchers of one session (its
     * sockets and their subscriptions) share one watch: one timer and one check.
     */
    watch(session: AuthSession, onRevoked: () => void): () => void {
      const key = `${session.id}\0${session.tokenExpiresAt?.getTime() ?? ''}`
      let group = groups.get(key)
      if (!group) {
        const listeners = new Set<() => void>()
        const stop = watchOne(session, () => {
          groups.delete(key)
          for (const listener of listeners)
            listener()
        })
        group = { listeners, stop }
        groups.set(key, group)
      }
      const { listeners, stop } = group
      listeners.add(onRevoked)
      return () => {
        if (listeners.delete(onRevoked) && listeners.size === 0 && groups.get(key)?.listeners === listeners) {
          groups.delete(key)
          stop()
        }
      }
    },

    async close(): Promise<void> {
      const unsubscribe = await subscription?.catch(() => undefined)
      subscription = undefined
      await unsubscribe?.()
    },
  }

  function watchOne(session: AuthSession, onRevoked: () => void): () => void {
    let done = false
    let timer: NodeJS.Timeout | undefined
    const watcher: Watcher = {
      session,
      onRevoked: () => {
        if (done)
          return
        stop()
        onRevoked()
      },
    }
    const armExpiryTimer = (until: number | null) => {
      if (done)
        return
      if (until === null)
        return watcher.onRevoked()
      timer = setTimeout(() => {
        // A session can be extended meanwhile: ask again at its expiry.
        states.delete(session.id)
        activeUntil(session).then(armExpiryTimer, () => armExpiryTimer(now() + cacheTtlMs))
      }, Math.min(Math.max(until - now(), 0), MAX_TIMER_MS))
      timer.unref()
    }
    function stop() {
      done = true
      clearTimeout(timer)
      const set = watchers.get(session.id)
      set?.delete(watcher)
      if (set?.size === 0)
        watchers.delete(session.id)
    }

    let set = watchers.get(session.id)
    if (!set)
      watchers.set(session.id, set = new Set())
    set.add(watcher)
    activeUntil(session).then(armExpiryTimer, (error: unknown) => {
      logger.warn({ err: error, sessionId: session.id }, 'could not read a watched session; re-checking shortly')
      armExpiryTimer(now() + cacheTtlMs)
    })
    return stop
  }
}

export type SessionGuard = ReturnType<typeof createSessionGuard>
