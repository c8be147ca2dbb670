import type { LoggedStatement } from './infra.ts'

/** Statements the server sent during a capture, split into calls at the bench's boundary markers. */
export function splitCalls(statements: readonly LoggedStatement[], app: string, marker: string): string[][] {
  const calls: string[][] = [[]]
  for (const statement of statements) {
    if (statement.sql.includes(marker))
      calls.push([])
    else if (statement.app === app)
      calls.at(-1)!.push(statement.sql)
  }
  return calls.filter(call => call.length > 0)
}

export interface Identity {
  id: string
  /** The session token as stored (a gateway call reads the session by it). */
  sessionToken?: string
}

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi

/**
 * One pgbench script per user from the statements of one captured call: the
 * captured user's id and session token become each user's own, and every other
 * UUID (call ids, row ids, request ids) becomes a fresh one per transaction, so
 * inserts never collide on unique keys. pgbench substitutes `:uN` textually (its
 * default simple protocol), also inside quoted literals.
 */
export function pgbenchScripts(statements: readonly string[], captured: Identity, users: readonly Identity[]): string[] {
  const variables = new Map<string, string>()
  // The user's own values first, so a user id that is itself a UUID stays the user's.
  const own = (sql: string) => {
    let out = sql.replaceAll(captured.id, '@@USER@@')
    if (captured.sessionToken)
      out = out.replaceAll(captured.sessionToken, '@@TOKEN@@')
    return out
  }
  const body = statements.map(sql => `${own(sql).replace(UUID, (uuid) => {
    const key = uuid.toLowerCase()
    if (!variables.has(key))
      variables.set(key, `u${variables.size + 1}`)
    return `00000000-0000-4000-8000-:${variables.get(key)}`
  }).trim().replace(/;$/, '')};`).join('\n')
  const header = [...variables.values()].map(name => `\\set ${name} random(100000000000, 999999999999)`).join('\n')
  const template = `${header}\n${body}\n`
  return users.map((user) => {
    return template.replaceAll('@@USER@@', user.id).replaceAll('@@TOKEN@@', user.sessionToken ?? '')
  })
}
