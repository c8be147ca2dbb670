import type { Auth } from '../../auth/auth.ts'
import type { SessionGuard } from '../../auth/session-guard.ts'
import type { Clock } from '../../clock.ts'
import { ApiError } from '../../errors.ts'
import type { BillingService } from '../billing/index.ts'
import type { UsageCall, UsageService } from '../usage/index.ts'
import type { AdminRegistry } from './admins.ts'

/** How many of a user's newest calls and live sessions a lookup shows. */
const RECENT_CALLS = 20
const SESSIONS = 50

export interface UserLookup {
  user: { id: string, email: string, name: string, emailVerified: boolean, createdAt: Date, isAdmin: boolean }
  balance: number
  calls: UsageCall[]
  sessions: Array<{ id: string, createdAt: Date, expiresAt: Date, userAgent: string | null, ipAddress: string | null }>
}

export interface CreateUserInput {
  email: string
  password: string
  name?: string
  verified: boolean
}

/**
 * What an operator does with accounts: create one (development), look one up by
 * e-mail, end its sessions. better-auth owns those tables, so every read and write
 * goes through it, as a sign-up or sign-out would.
 */
export function createOperatorUsers({ auth, sessionGuard, billing, usage, admins, clock }: {
  auth: Auth
  sessionGuard: Pick<SessionGuard, 'revoke'>
  billing: Pick<BillingService, 'getBalance'>
  usage: Pick<UsageService, 'calls'>
  admins: Pick<AdminRegistry, 'isAdmin'>
  clock: Clock
}) {
  // better-auth stores e-mails lower-cased.
  const findByEmail = async (email: string) => (await (await auth.$context).internalAdapter.findUserByEmail(email.trim().toLowerCase()))?.user

  return {
    /** Signs the user up (the verification e-mail goes out as for any sign-up), then marks the e-mail verified when asked. */
    async create(input: CreateUserInput): Promise<{ id: string, email: string, emailVerified: boolean }> {
      if (await findByEmail(input.email))
        throw new ApiError(409, 'USER_EXISTS', `An account with ${input.email} already exists`, { email: input.email })
      const { user } = await auth.api.signUpEmail({ body: { email: input.email, password: input.password, name: input.name ?? input.email.split('@')[0]! } })
      if (!input.verified)
        return { id: user.id, email: user.email, emailVerified: user.emailVerified }
      const context = await auth.$context
      const verified = await context.internalAdapter.updateUser(user.id, { emailVerified: true })
      return { id: verified.id, email: verified.email, emailVerified: verified.emailVerified }
    },

    async lookup(email: string): Promise<UserLookup> {
      const user = await findByEmail(email)
      if (!user)
        throw new ApiError(404, 'USER_NOT_FOUND', `No account has the e-mail ${email}`, { email })
      const context = await auth.$context
      const [isAdmin, balance, calls, sessions] = await Promise.all([
        admins.isAdmin(user.email),
        billing.getBalance(user.id),
        usage.calls(user.id, { limit: RECENT_CALLS }),
        context.internalAdapter.listSessions(user.id),
      ])
      const live = sessions.filter(session => session.expiresAt.getTime() > clock.now())
        .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime()).slice(0, SESSIONS)
        .map(session => ({ id: session.id, createdAt: session.createdAt, expiresAt: session.expiresAt, userAgent: session.userAgent ?? null, ipAddress: session.ipAddress ?? null }))
      return {
        user: { id: user.id, email: user.email, name: user.name, emailVerified: user.emailVerified, createdAt: user.createdAt, isAdmin: isAdmin && user.emailVerified },
        balance,
        calls: calls.items,
        sessions: live,
      }
    },

    /** Ends one session of the user, or all of them; their live connections close as on a sign-out. */
    async revokeSessions(userId: string, sessionId?: string): Promise<{ revoked: number }> {
      const context = await auth.$context
      const sessions = (await context.internalAdapter.listSessions(userId)).filter(session => !sessionId || session.id === sessionId)
      if (sessions.length === 0)
        return { revoked: 0 }
      await context.internalAdapter.deleteSessions(sessions.map(session => session.token))
      // A bulk delete runs no per-session hook: tell every instance here.
      await sessionGuard.revoke(sessionId ? { userId, sessionId } : { userId })
      return { revoked: sessions.length }
    },
  }
}

export type OperatorUsers = ReturnType<typeof createOperatorUsers>
