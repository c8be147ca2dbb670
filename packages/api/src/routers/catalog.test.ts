import { describe, expect, it } from 'vitest'

import { proceduresBlock, renderProcedureTable, renderSchema } from '@airi/tooling/scripts/api-docs'
import { currentBlock } from '@airi/tooling/scripts/generated-block'

import { describeProcedures } from './catalog.ts'

describe('procedure catalog', () => {
  it('knows every procedure\'s kind and access level', () => {
    const byPath = new Map(describeProcedures().map(entry => [entry.path, entry]))
    expect(byPath.get('meta.info')).toMatchObject({ type: 'query', access: 'public', input: null })
    expect(byPath.get('auth.me')).toMatchObject({ type: 'query', access: 'user' })
    expect(byPath.get('chats.onMessages')).toMatchObject({ type: 'subscription', access: 'user' })
    expect(byPath.get('admin.flux.grant')).toMatchObject({ type: 'mutation', access: 'admin' })
  })

  it('renders inputs as short types', () => {
    expect(renderSchema({ type: 'object', properties: { a: { type: 'string', minLength: 1, maxLength: 5 }, b: { type: 'integer', minimum: 0, default: 3 } }, required: ['a'] }))
      .toBe('{ a: string(1–5), b?: int(≥0) = 3 }')
  })

  it('is what docs/api.md lists (run `pnpm docs:api` after changing a procedure)', async () => {
    expect(await currentBlock(proceduresBlock)).toBe(renderProcedureTable(describeProcedures()))
  })
})
