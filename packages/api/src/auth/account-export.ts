import type { Db } from '@airi/db'

import { pagesById, redactColumns, singlePage, type ExportTables } from '../services/account-export/index.ts'

/**
 * The identity part of an account export: the user's rows of better-auth's tables,
 * read directly (better-auth writes them; this module only reads). Every credential
 * is replaced by `[redacted]`: session tokens, the password hash, the provider's
 * tokens of a linked account, OAuth client secrets and issued tokens (a refresh's
 * replay response holds tokens too). `verification` and `jwks` are not the user's.
 */
export function identityExportTables(db: Db, userId: string): ExportTables {
  return {
    user: singlePage(() => db.selectFrom('user').selectAll().where('id', '=', userId).execute()),
    session: pagesById(async (afterId, limit) => (await db.selectFrom('session').selectAll().where('userId', '=', userId)
      .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
      .orderBy('id').limit(limit).execute()).map(row => redactColumns(row, ['token']))),
    account: pagesById(async (afterId, limit) => (await db.selectFrom('account').selectAll().where('userId', '=', userId)
      .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
      .orderBy('id').limit(limit).execute()).map(row => redactColumns(row, ['accessToken', 'refreshToken', 'idToken', 'password']))),
    oauthClient: pagesById(async (afterId, limit) => (await db.selectFrom('oauthClient').selectAll().where('userId', '=', userId)
      .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
      .orderBy('id').limit(limit).execute()).map(row => redactColumns(row, ['clientSecret']))),
    oauthConsent: pagesById(async (afterId, limit) => db.selectFrom('oauthConsent').selectAll().where('userId', '=', userId)
      .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
      .orderBy('id').limit(limit).execute()),
    oauthRefreshToken: pagesById(async (afterId, limit) => (await db.selectFrom('oauthRefreshToken').selectAll().where('userId', '=', userId)
      .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
      .orderBy('id').limit(limit).execute()).map(row => redactColumns(row, ['token', 'rotationReplayResponse']))),
    oauthAccessToken: pagesById(async (afterId, limit) => (await db.selectFrom('oauthAccessToken').selectAll().where('userId', '=', userId)
      .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
      .orderBy('id').limit(limit).execute()).map(row => redactColumns(row, ['token']))),
  }
}
