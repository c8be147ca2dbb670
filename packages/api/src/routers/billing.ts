import { z } from 'zod'

import { createRouter, protectedProcedure, publicProcedure } from '../trpc.ts'
import { text } from './schemas.ts'

/** An http(s) URL on one of our trusted origins (the origin is checked by the service: `INVALID_ORIGIN`). */
const returnUrl = z.url({ protocol: /^https?$/, message: 'Must be an http(s) URL' }).max(2_048).refine(value => !/[\0\s]/.test(value), 'Must not contain whitespace')

const checkoutInput = z.object({
  stripePriceId: text().trim().min(1).max(255),
  currency: z.string().regex(/^[a-z]{3}$/i, 'Must be a three-letter ISO currency code').transform(value => value.toLowerCase()).optional(),
  returnUrl,
})

const ordersInput = z.object({
  cursor: text().min(1).max(500).nullish(),
  limit: z.number().int().min(1).max(100).default(20),
})

const invoicesInput = z.object({
  limit: z.number().int().min(1).max(100).default(20),
})

const portalInput = z.object({ returnUrl })

export const billingRouter = createRouter({
  /** The Flux packages on sale, with their price in every currency; cached 5 minutes. */
  packages: publicProcedure.query(({ ctx }) => ctx.services.stripe.packages()),

  /** Starts a Stripe Checkout for one package; answers the hosted page's URL. */
  checkout: protectedProcedure.input(checkoutInput).mutation(({ ctx, input }) => ctx.services.stripe.checkout(ctx.user, input)),

  /** The caller's checkout sessions, newest first, with their status and Flux. */
  orders: protectedProcedure.input(ordersInput).query(({ ctx, input }) => ctx.services.stripe.orders(ctx.user.id, input)),

  /** The caller's Stripe invoices, newest first. */
  invoices: protectedProcedure.input(invoicesInput).query(({ ctx, input }) => ctx.services.stripe.invoices(ctx.user.id, input)),

  /** A Stripe billing portal session for the caller (404 `NO_CUSTOMER` before a first purchase). */
  portal: protectedProcedure.input(portalInput).mutation(({ ctx, input }) => ctx.services.stripe.portal(ctx.user.id, input)),
})
