import type { Db } from '@airi/db'

import { keysetPages, singlePage, type ExportTables } from '../account-export/index.ts'

/** The user's part of billing for an account export: the balance row and the whole ledger, in ledger order. */
export function billingExportTables(db: Db, userId: string): ExportTables {
  return {
    user_flux: singlePage(() => db.selectFrom('user_flux').selectAll().where('user_id', '=', userId).execute()),
    // Along (user_id, seq desc), read backwards.
    flux_transaction: keysetPages(async (after: { seq: number } | undefined, limit) => db.selectFrom('flux_transaction').selectAll()
      .where('user_id', '=', userId)
      .$if(after !== undefined, query => query.where('seq', '>', after!.seq))
      .orderBy('seq').limit(limit).execute()),
  }
}
