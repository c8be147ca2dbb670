import type { Db } from '@airi/db'

/**
 * The users port: the few reads other services need from better-auth's `user`
 * table, which only better-auth writes.
 */
export function createUsers({ db }: { db: Db }) {
  return {
    /** Of `ids`, those of users that exist. */
    async existing(ids: string[]): Promise<Set<string>> {
      if (ids.length === 0)
        return new Set()
      const rows = await db.selectFrom('user').select('id').where('id', 'in', ids).execute()
      return new Set(rows.map(row => row.id))
    },

    /** The user's e-mail in lower case, or undefined for a user that does not exist. */
    async emailOf(id: string): Promise<string | undefined> {
      return (await db.selectFrom('user').select('email').where('id', '=', id).executeTakeFirst())?.email.toLowerCase()
    },

    /** Users whose e-mail matches one of `emails`, compared in lower case. */
    async findByEmails(emails: string[]): Promise<{ id: string, email: string }[]> {
      const wanted = [...new Set(emails.map(email => email.toLowerCase()))]
      if (wanted.length === 0)
        return []
      return db.selectFrom('user').select(['id', 'email']).where(eb => eb(eb.fn('lower', ['email']), 'in', wanted)).execute()
    },
  }
}

export type Users = ReturnType<typeof createUsers>
