import { createRouter } from '../trpc.ts'
import { adminRouter } from './admin.ts'
import { apiKeysRouter } from './api-keys.ts'
import { audioRouter } from './audio.ts'
import { authRouter } from './auth.ts'
import { billingRouter } from './billing.ts'
import { charactersRouter } from './characters.ts'
import { chatsRouter } from './chats.ts'
import { fluxRouter } from './flux.ts'
import { memoryRouter } from './memory.ts'
import { metaRouter } from './meta.ts'
import { providersRouter } from './providers.ts'
import { usageRouter } from './usage.ts'

export const appRouter = createRouter({
  admin: adminRouter,
  apiKeys: apiKeysRouter,
  audio: audioRouter,
  auth: authRouter,
  billing: billingRouter,
  characters: charactersRouter,
  chats: chatsRouter,
  flux: fluxRouter,
  memory: memoryRouter,
  meta: metaRouter,
  providers: providersRouter,
  usage: usageRouter,
})

export type AppRouter = typeof appRouter
