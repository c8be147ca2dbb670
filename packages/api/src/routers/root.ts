import { createRouter } from '../trpc.ts'
import { adminRouter } from './admin.ts'
import { metaRouter } from './meta.ts'

export const appRouter = createRouter({
  admin: adminRouter,
  meta: metaRouter,
})

export type AppRouter = typeof appRouter
