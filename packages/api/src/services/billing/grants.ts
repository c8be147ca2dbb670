import { randomUUID } from 'node:crypto'

import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { GrantedFlux } from '../analytics.ts'
import type { Users } from '../users.ts'
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

type GrantStatus = 'granted' | 'would_grant' | 'skipped' | 'failed'
type SkipReason = 'duplicate' | 'not_found' | 'deleted' | 'already_granted'

interface GrantOutcome {
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
function grantRequestId(key: string, userId: string): string {
  return `flux-grant:${key}:${userId}`
}

/**
 * Admin Flux grants: resolves e-mails (case-insensitively) and credits each
 * recipient synchronously through the billing service, reporting per e-mail.
 */
export function createFluxGrantService({ users, billing, logger, onGranted }: {
  users: Pick<Users, 'findByEmails'>
  billing: Pick<BillingService, 'closedAccounts' | 'findByRequestId' | 'credit'>
  logger: Logger
  /** Seam for product analytics (`flux_granted`), told of each credited recipient. */
  onGranted?: (grant: GrantedFlux) => void
}) {
  return {
    async grant(input: GrantInput, grantedBy: string): Promise<GrantReport> {
      const key = input.idempotencyKey ?? randomUUID()
      const dryRun = input.dryRun ?? false
      const found = await users.findByEmails(input.emails.map(email => email.trim()))
      const byEmail = new Map(found.map(user => [user.email.toLowerCase(), user]))
      // Asked up front so a dry run reports them too; billing refuses a credit to them anyway.
      const closed = await billing.closedAccounts(found.map(user => user.id))

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
