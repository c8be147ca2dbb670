import type { Kysely } from 'kysely'
import { sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('stripe_customer')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('user_id', 'text', col => col.notNull().unique())
    .addColumn('stripe_customer_id', 'text', col => col.notNull().unique())
    .addColumn('email', 'text')
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('deleted_at', 'timestamptz')
    .execute()

  await db.schema
    .createTable('stripe_checkout_session')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('user_id', 'text', col => col.notNull())
    .addColumn('stripe_session_id', 'text', col => col.notNull().unique())
    .addColumn('stripe_customer_id', 'text')
    .addColumn('stripe_price_id', 'text')
    .addColumn('mode', 'text', col => col.notNull())
    .addColumn('status', 'text', col => col.notNull())
    .addColumn('payment_status', 'text')
    .addColumn('amount_total', 'bigint')
    .addColumn('currency', 'text')
    .addColumn('flux_amount', 'bigint')
    .addColumn('flux_credited', 'boolean', col => col.notNull().defaultTo(false))
    .addColumn('url', 'text')
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .execute()

  await db.schema
    .createTable('stripe_subscription')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('user_id', 'text', col => col.notNull())
    .addColumn('stripe_subscription_id', 'text', col => col.notNull().unique())
    .addColumn('stripe_customer_id', 'text', col => col.notNull())
    .addColumn('stripe_price_id', 'text')
    .addColumn('status', 'text', col => col.notNull())
    .addColumn('current_period_start', 'timestamptz')
    .addColumn('current_period_end', 'timestamptz')
    .addColumn('cancel_at_period_end', 'boolean', col => col.notNull().defaultTo(false))
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .execute()

  await db.schema
    .createTable('stripe_invoice')
    .addColumn('id', 'text', col => col.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
    .addColumn('user_id', 'text', col => col.notNull())
    .addColumn('stripe_invoice_id', 'text', col => col.notNull().unique())
    .addColumn('stripe_customer_id', 'text', col => col.notNull())
    .addColumn('stripe_subscription_id', 'text')
    .addColumn('amount_paid', 'bigint', col => col.notNull())
    .addColumn('currency', 'text', col => col.notNull())
    .addColumn('status', 'text', col => col.notNull())
    .addColumn('hosted_invoice_url', 'text')
    .addColumn('invoice_pdf', 'text')
    .addColumn('flux_credited', 'boolean', col => col.notNull().defaultTo(false))
    .addColumn('created_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', col => col.notNull().defaultTo(sql`now()`))
    .execute()

  // billing.orders / billing.invoices and account deletion look rows up by user.
  for (const table of ['stripe_checkout_session', 'stripe_subscription', 'stripe_invoice']) {
    await db.schema
      .createIndex(`${table}_user_id_idx`)
      .on(table)
      .column('user_id')
      .execute()
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('stripe_invoice').execute()
  await db.schema.dropTable('stripe_subscription').execute()
  await db.schema.dropTable('stripe_checkout_session').execute()
  await db.schema.dropTable('stripe_customer').execute()
}
