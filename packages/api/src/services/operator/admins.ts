import type { Db } from '@airi/db'

import { ApiError } from '../../errors.ts'
import { singlePage, type ExportTables } from '../account-export/index.ts'
import type { Users } from '../users.ts'

export interface AdminEntry {
  email: string
  /** `env`: ADMIN_EMAILS (changed only by a restart); `stored`: added by an operator. */
  source: 'env' | 'stored'
  addedAt: Date | null
}

const normalise = (email: string) => email.trim().toLowerCase()

/**
 * Who is an administrator: the ADMIN_EMAILS of the environment, and the e-mails an
 * operator added (`operator_admins`, read on every admin call, so a change needs no
 * restart and reaches every instance). Admin procedures also require the caller's
 * e-mail to be verified.
 */
export function createAdminRegistry({ db, users, envEmails }: { db: Db, users: Pick<Users, 'emailOf'>, envEmails: readonly string[] }) {
  const fromEnv = new Set(envEmails.map(normalise).filter(Boolean))

  return {
    async isAdmin(email: string): Promise<boolean> {
      const wanted = normalise(email)
      if (fromEnv.has(wanted))
        return true
      return (await db.selectFrom('operator_admins').select('email').where('email', '=', wanted).executeTakeFirst()) !== undefined
    },

    async list(): Promise<AdminEntry[]> {
      const rows = await db.selectFrom('operator_admins').select(['email', 'created_at']).orderBy('email').execute()
      const stored = rows.filter(row => !fromEnv.has(row.email)).map(row => ({ email: row.email, source: 'stored' as const, addedAt: row.created_at }))
      return [...[...fromEnv].sort().map(email => ({ email, source: 'env' as const, addedAt: null })), ...stored]
    },

    /** `added` is false when the e-mail already was an administrator. */
    async add(email: string, addedBy: string | null): Promise<{ email: string, added: boolean }> {
      const wanted = normalise(email)
      if (fromEnv.has(wanted))
        return { email: wanted, added: false }
      const result = await db.insertInto('operator_admins').values({ email: wanted, added_by: addedBy })
        .onConflict(oc => oc.column('email').doNothing()).executeTakeFirst()
      return { email: wanted, added: Number(result.numInsertedOrUpdatedRows ?? 0) > 0 }
    },

    /** Account export: the row that makes the user's e-mail an administrator, if any. */
    exportTables: (userId: string): ExportTables => ({
      operator_admins: singlePage(async () => {
        const email = await users.emailOf(userId)
        return email === undefined ? [] : db.selectFrom('operator_admins').selectAll().where('email', '=', email).execute()
      }),
    }),

    async remove(email: string): Promise<{ email: string, removed: boolean }> {
      const wanted = normalise(email)
      if (fromEnv.has(wanted))
        throw new ApiError(409, 'ADMIN_FROM_ENV', `${wanted} is an administrator through the server's ADMIN_EMAILS setting: remove it there and restart the server`, { email: wanted })
      const result = await db.deleteFrom('operator_admins').where('email', '=', wanted).executeTakeFirst()
      return { email: wanted, removed: Number(result.numDeletedRows) > 0 }
    },
  }
}

export type AdminRegistry = ReturnType<typeof createAdminRegistry>
