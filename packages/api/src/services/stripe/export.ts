import type { Db } from '@airi/db'

import { pagesById, redactColumns, type ExportTables } from '../account-export/index.ts'

type StripeTable = 'stripe_customer' | 'stripe_checkout_session' | 'stripe_subscription' | 'stripe_invoice'

/**
 * The user's part of the Stripe mirror for an account export: customer, checkout
 * sessions (orders), subscriptions and invoices. Stripe's ids are references that
 * only our secret key can act on; a checkout's `url` lets whoever holds it pay, so
 * it is redacted. Invoice links stay: they are the user's own receipts.
 */
export function stripeExportTables(db: Db, userId: string): ExportTables {
  const table = (name: StripeTable) => pagesById(async (afterId, limit) => db.selectFrom(name).selectAll().where('user_id', '=', userId)
    .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
    .orderBy('id').limit(limit).execute())
  return {
    stripe_customer: table('stripe_customer'),
    stripe_checkout_session: pagesById(async (afterId, limit) => (await db.selectFrom('stripe_checkout_session').selectAll().where('user_id', '=', userId)
      .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
      .orderBy('id').limit(limit).execute()).map(row => redactColumns(row, ['url']))),
    stripe_subscription: table('stripe_subscription'),
    stripe_invoice: table('stripe_invoice'),
  }
}
