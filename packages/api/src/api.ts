import type { Db } from '@airi/db'

import type { Adapters } from './adapters/ports.ts'
import type { AuthInput, Context, RequestAuthResolver } from './context.ts'
import { anonymousResolver } from './context.ts'
import type { Logger } from './logger.ts'
import { appRouter } from './routers/root.ts'
import { createConfigService } from './services/config.ts'
import type { Services } from './services/index.ts'
import { createMetaService } from './services/meta.ts'

export interface ApiDeps {
  db: Db
  adapters: Adapters
  logger: Logger
  /** Lower-cased e-mails allowed to call admin procedures (ADMIN_EMAILS). */
  adminEmails?: readonly string[]
  resolveAuth?: RequestAuthResolver
  service?: { name: string, version: string }
}

export interface ContextInput extends AuthInput {
  requestId: string
  logger?: Logger
}

/**
 * The composition root: builds every service from its explicit dependencies and
 * returns what a transport needs to serve them.
 */
export async function createApi(deps: ApiDeps) {
  const { db, adapters, logger } = deps
  const resolveAuth = deps.resolveAuth ?? anonymousResolver
  const adminEmails = new Set((deps.adminEmails ?? []).map(email => email.trim().toLowerCase()).filter(Boolean))

  const config = await createConfigService({ db, cache: adapters.cache, pubsub: adapters.pubsub, logger })
  const services: Services = {
    config,
    meta: createMetaService({ service: deps.service?.name ?? 'airi-server', version: deps.service?.version ?? '0.0.0' }),
  }

  return {
    router: appRouter,
    services,
    resolveAuth,
    async createContext(input: ContextInput): Promise<Context> {
      return {
        auth: await resolveAuth(input),
        services,
        logger: input.logger ?? logger,
        requestId: input.requestId,
        adminEmails,
      }
    },
    /** Readiness checks, by name. */
    checks: {
      postgres: async () => {
        await db.selectNoFrom(eb => eb.lit(1).as('ok')).execute()
      },
      ...(adapters.kind === 'redis' ? { redis: () => adapters.ping() } : {}),
    } as Record<string, () => Promise<void>>,
    async close(): Promise<void> {
      await config.close()
    },
  }
}

export type Api = Awaited<ReturnType<typeof createApi>>
