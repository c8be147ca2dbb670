import type { Db } from '@airi/db'

import type { EmailTransport } from './adapters/email.ts'
import type { Adapters } from './adapters/ports.ts'
import { createAuth } from './auth/auth.ts'
import { AUTH_BASE_PATH, type AuthSettings } from './auth/options.ts'
import { createRequestAuthResolver } from './auth/resolver.ts'
import { seedTrustedClients, type TrustedClient } from './auth/trusted-clients.ts'
import type { AuthInput, Context } from './context.ts'
import type { Logger } from './logger.ts'
import { appRouter } from './routers/root.ts'
import { createConfigService } from './services/config.ts'
import { createEmailService } from './services/email.ts'
import type { Services } from './services/index.ts'
import { createMetaService } from './services/meta.ts'
import { createUserDeletionRegistry } from './services/user-deletion.ts'

export interface ApiDeps {
  db: Db
  adapters: Adapters
  logger: Logger
  /** Resend in production, the log transport in development. */
  emailTransport: EmailTransport
  auth: AuthSettings & { trustedClients?: TrustedClient[] }
  /** E-mails allowed to call admin procedures (ADMIN_EMAILS), matched case-insensitively. */
  adminEmails?: readonly string[]
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
  const adminEmails = new Set((deps.adminEmails ?? []).map(email => email.trim().toLowerCase()).filter(Boolean))

  const config = await createConfigService({ db, cache: adapters.cache, pubsub: adapters.pubsub, logger })
  const email = createEmailService({ transport: deps.emailTransport, logger })
  const userDeletion = createUserDeletionRegistry({ logger })

  const auth = createAuth({ db, settings: deps.auth, email, logger, beforeDeleteUser: userId => userDeletion.run(userId) })
  // better-auth initialises (and its OAuth provider seeds our API resource) eagerly;
  // wait for it so a failure stops start-up instead of surfacing later, unhandled.
  await auth.$context
  const baseUrl = deps.auth.baseUrl.replace(/\/$/, '')
  await seedTrustedClients(auth, deps.auth.trustedClients ?? [], baseUrl)
  const resolveAuth = createRequestAuthResolver({ auth, issuer: `${baseUrl}${AUTH_BASE_PATH}`, audience: baseUrl, logger })

  const services: Services = {
    config,
    email,
    userDeletion,
    meta: createMetaService({ service: deps.service?.name ?? 'airi-server', version: deps.service?.version ?? '0.0.0' }),
  }

  return {
    router: appRouter,
    services,
    auth,
    resolveAuth,
    adapters,
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
