import { randomUUID } from 'node:crypto'

import type { Db } from '@airi/db'

import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { GrantedFlux } from '../analytics.ts'
import type { BillingService } from './ledger.ts'

export interface GrantInput {
  description: string
  amount: number
  emails: string[]
  /** Reusing a key grants only what the earlier run did not. Generated when absent. */
  idempotencyKey?: string
  /** Resolve and report, write nothing. */
  dryRun?: boolean
}

export type GrantStatus = 'granted' | 'would_grant' | 'skipped' | 'failed'
export type SkipReason = 'duplicate' | 'not_found' | 'deleted' | 'already_granted'

export interface GrantOutcome {
  email: string
  status: GrantStatus
  reason?: SkipReason
  /** Why a credit failed (the message of the error). */
  error?: string
  userId?: string
  balanceAfter?: number
}

export interface GrantReport {
  idempotencyKey: string
  dryRun: boolean
  amount: number
  results: GrantOutcome[]
  summary: Record<GrantStatus, number>
}

/** The ledger request id of one recipient's grant: what makes a rerun with the same key safe. */
export function grantRequestId(key: string, userId: string): string {
  return `flux-grant:${key}:${userId}`
}

/**
 * Admin Flux grants: resolves e-mails (case-insensitively) and credits each
 * recipient synchronously through the billing service, reporting per e-mail.
 */
export function createFluxGrantService({ db, billing, logger, onGranted }: {
  db: Db
  billing: BillingService
  logger: Logger
  /** Seam for product analytics (`flux_granted`), told of each credited recipient. */
  onGranted?: (grant: GrantedFlux) => void
}) {
  return {
    async grant(input: GrantInput, grantedBy: string): Promise<GrantReport> {
      const key = input.idempotencyKey ?? randomUUID()
      const dryRun = input.dryRun ?? false
      const wanted = [...new Set(input.emails.map(email => email.trim().toLowerCase()))]
      const users = wanted.length === 0
        ? []
        : await db.selectFrom('user').select(['id', 'email']).where(eb => eb(eb.fn('lower', ['email']), 'in', wanted)).execute()
      const byEmail = new Map(users.map(user => [user.email.toLowerCase(), user]))
      const closed = new Set(users.length === 0
        ? []
        : (await db.selectFrom('user_flux').select('user_id').where('user_id', 'in', users.map(user => user.id)).where('deleted_at', 'is not', null).execute()).map(row => row.user_id))

      const seen = new Set<string>()
      const results: GrantOutcome[] = []
      for (const raw of input.emails) {
        const email = raw.trim().toLowerCase()
        if (seen.has(email)) {
          results.push({ email: raw, status: 'skipped', reason: 'duplicate' })
          continue
        }
        seen.add(email)
        const user = byEmail.get(email)
        if (!user) {
          results.push({ email: raw, status: 'skipped', reason: 'not_found' })
          continue
        }
        if (closed.has(user.id)) {
          results.push({ email: raw, status: 'skipped', reason: 'deleted', userId: user.id })
          continue
        }
        const requestId = grantRequestId(key, user.id)
        if (await billing.findByRequestId(user.id, requestId)) {
          results.push({ email: raw, status: 'skipped', reason: 'already_granted', userId: user.id })
          continue
        }
        if (dryRun) {
          results.push({ email: raw, status: 'would_grant', userId: user.id })
          continue
        }
        try {
          const entry = await billing.credit({
            userId: user.id,
            amount: input.amount,
            type: 'promo',
            requestId,
            description: input.description,
            metadata: { grantKey: key, grantedBy },
            announce: true,
          })
          results.push({ email: raw, status: 'granted', userId: user.id, balanceAfter: entry.balanceAfter })
          onGranted?.({ userId: user.id, amount: input.amount, grantKey: key, grantedBy })
        }
        catch (error) {
          logger.error({ err: error, userId: user.id, grantKey: key }, 'flux grant failed for one recipient')
          results.push({ email: raw, status: 'failed', userId: user.id, error: error instanceof ApiError ? error.message : 'internal error' })
        }
      }

      const summary: Record<GrantStatus, number> = { granted: 0, would_grant: 0, skipped: 0, failed: 0 }
      for (const result of results)
        summary[result.status]++
      logger.info({ grantKey: key, dryRun, amount: input.amount, grantedBy, summary }, 'flux grant')
      return { idempotencyKey: key, dryRun, amount: input.amount, results, summary }
    },
  }
}

export type FluxGrantService = ReturnType<typeof createFluxGrantService>
