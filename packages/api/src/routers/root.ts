import { createRouter } from '../trpc.ts'
import { metaRouter } from './meta.ts'

export const appRouter = createRouter({
  meta: metaRouter,
})

export type AppRouter = typeof appRouter
