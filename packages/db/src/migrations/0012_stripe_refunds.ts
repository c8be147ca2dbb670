import type { Kysely } from 'kysely'

// A refund arrives as `charge.refunded`, which names the payment intent, not the
// checkout session: the intent is kept on the mirror row to find the purchase.
// `flux_refunded` is the share of the purchase's Flux already taken back (or, for a
// purchase not yet credited, held back), so refund events that are redelivered or
// arrive out of order never take more than the refunded share.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('stripe_checkout_session')
    .addColumn('stripe_payment_intent_id', 'text')
    .addColumn('flux_refunded', 'bigint', col => col.notNull().defaultTo(0))
    .execute()
  await db.schema.createIndex('stripe_checkout_session_payment_intent_idx')
    .on('stripe_checkout_session')
    .column('stripe_payment_intent_id')
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('stripe_checkout_session_payment_intent_idx').execute()
  await db.schema.alterTable('stripe_checkout_session')
    .dropColumn('stripe_payment_intent_id')
    .dropColumn('flux_refunded')
    .execute()
}
