import type { AdminRegistry } from './admins.ts'
import type { UpstreamAdmin } from './upstreams.ts'
import type { OperatorUsers } from './users.ts'

export { createAdminRegistry, type AdminEntry, type AdminRegistry } from './admins.ts'
export { createUpstreamAdmin, upstreamKinds, upstreamPutInput, type AliasView, type UpstreamKind, type UpstreamList, type UpstreamPut } from './upstreams.ts'
export { createOperatorUsers, type CreateUserInput, type UserLookup } from './users.ts'

/** What operators do beyond config entries: upstreams by alias, administrators, accounts (the CLI and the admin pages). */
export interface OperatorService {
  upstreams: UpstreamAdmin
  admins: AdminRegistry
  users: OperatorUsers
}
