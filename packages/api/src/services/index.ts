import type { ConfigService } from './config.ts'
import type { EmailService } from './email.ts'
import type { createMetaService } from './meta.ts'
import type { UserDeletionRegistry } from './user-deletion.ts'

/** Every domain service, as composed by `createApi`. */
export interface Services {
  config: ConfigService
  email: EmailService
  userDeletion: UserDeletionRegistry
  meta: ReturnType<typeof createMetaService>
}
