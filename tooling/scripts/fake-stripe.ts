import process from 'node:process'

import { startFakeStripe } from '../fakes/stripe.ts'

// Local development without a Stripe account (docs/billing.md, "Testing locally"):
//   pnpm exec tsx tooling/scripts/fake-stripe.ts [webhook URL]
// starts the fake Stripe API with a Flux product and three packages; its checkout
// page pays at once and delivers the signed completion to the server's webhook.

const webhookUrl = process.argv[2] ?? 'http://localhost:3000/api/v1/stripe/webhook'
const port = Number(process.env.FAKE_STRIPE_PORT ?? 12111)
const product = 'prod_fake_flux'

const stripe = await startFakeStripe({ port, webhookUrl })
stripe.addPrice({ product, currency: 'usd', unitAmount: 300, currencyOptions: { cny: 2200 }, nickname: 'Starter', metadata: { fluxAmount: '300' } })
stripe.addPrice({ product, currency: 'usd', unitAmount: 1000, currencyOptions: { cny: 7200 }, metadata: { fluxAmount: '1200', recommended: 'true' } })
stripe.addPrice({ product, currency: 'usd', unitAmount: 3000, currencyOptions: { cny: 21600 }, metadata: { fluxAmount: '4000' } })

process.stdout.write(`fake Stripe API on ${stripe.url}, delivering webhooks to ${webhookUrl}

Start the server with:
  STRIPE_API_URL=${stripe.url} STRIPE_SECRET_KEY=${stripe.secretKey} STRIPE_WEBHOOK_SECRET=${stripe.webhookSecret}
and set the operator entry (as an admin):
  admin.config.set({ key: 'STRIPE_FLUX_PRODUCT_ID', value: '${product}' })
Opening a checkout URL pays it; add ?cancel to cancel instead.\n`)

const stop = () => {
  void stripe.close().then(() => process.exit(0))
}
process.once('SIGINT', stop)
process.once('SIGTERM', stop)
