import { ApiError } from '../errors.ts'
import type { Logger } from '../logger.ts'

/**
 * One capability's part of deleting an account. Priorities: 10 external side
 * effects (e.g. cancel Stripe subscriptions), 20 money and caches, 30 plain rows.
 * `softDelete` must be idempotent: a deletion that failed half-way is retried whole.
 */
export interface UserDeletionHandler {
  name: string
  priority: number
  softDelete: (userId: string) => Promise<void>
}

export type UserDeletionRegistry = ReturnType<typeof createUserDeletionRegistry>

/**
 * Every capability registers how it forgets a user; account deletion runs them in
 * priority order, before the auth identity is hard-deleted, and stops at the first
 * failure so the user can retry with nothing half-gone on the identity side.
 */
export function createUserDeletionRegistry({ logger }: { logger: Logger }) {
  const handlers: UserDeletionHandler[] = []

  return {
    register(handler: UserDeletionHandler): void {
      if (handlers.some(existing => existing.name === handler.name))
        throw new Error(`user deletion handler ${handler.name} is already registered`)
      handlers.push(handler)
    },

    /** The handlers in the order `run` calls them (by priority, then registration). */
    ordered(): UserDeletionHandler[] {
      return handlers.map((handler, index) => ({ handler, index }))
        .sort((a, b) => a.handler.priority - b.handler.priority || a.index - b.index)
        .map(({ handler }) => handler)
    },

    async run(userId: string): Promise<void> {
      for (const handler of this.ordered()) {
        try {
          await handler.softDelete(userId)
        }
        catch (error) {
          logger.error({ err: error, userId, handler: handler.name }, 'account deletion stopped: a handler failed')
          throw new ApiError(500, 'USER_DELETION_FAILED', `Account deletion could not finish (${handler.name}); nothing was deleted from the account itself, try again`, { handler: handler.name })
        }
      }
      logger.info({ userId, handlers: handlers.length }, 'account data deleted by every handler')
    },
  }
}
