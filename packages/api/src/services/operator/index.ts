import type { AdminRegistry } from './admins.ts'
import type { UpstreamAdmin } from './upstreams.ts'
import type { OperatorUsers } from './users.ts'

export { createAdminRegistry } from './admins.ts'
export { createUpstreamAdmin, upstreamKinds, upstreamPutInput, type UpstreamKind } from './upstreams.ts'
export { createOperatorUsers } from './users.ts'

/** What operators do beyond config entries: upstreams by alias, administrators, accounts (the CLI and the admin pages). */
export interface OperatorService {
  upstreams: UpstreamAdmin
  admins: AdminRegistry
  users: OperatorUsers
}
