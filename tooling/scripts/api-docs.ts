import { fileURLToPath } from 'node:url'

import { describeProcedures, type ProcedureEntry } from '@airi/api'

import { writeOrCheck, type GeneratedBlock } from './generated-block.ts'

// Regenerates the procedure index in docs/api.md from the router itself:
//   pnpm docs:api          rewrite the block
//   pnpm docs:api --check  exit 1 when the block is out of date

type Schema = Record<string, unknown>

const START = '<!-- generated:procedures:start -->'
const END = '<!-- generated:procedures:end -->'
/** The procedure index of docs/api.md. */
export const proceduresBlock: GeneratedBlock = { path: fileURLToPath(new URL('../../docs/api.md', import.meta.url)), start: START, end: END, command: 'pnpm docs:api' }

function range(min: unknown, max: unknown): string {
  if (min === undefined && max === undefined)
    return ''
  if (min !== undefined && max !== undefined)
    return min === max ? `(${min})` : `(${min}–${max})`
  return min !== undefined ? `(≥${min})` : `(≤${max})`
}

/** A JSON Schema as a short TypeScript-like type. */
export function renderSchema(schema: Schema): string {
  const withDefault = (text: string) => schema.default !== undefined ? `${text} = ${JSON.stringify(schema.default)}` : text
  if (Array.isArray(schema.enum))
    return withDefault(schema.enum.map(value => JSON.stringify(value).replaceAll('"', '\'')).join(' \\| '))
  if (Array.isArray(schema.anyOf))
    return withDefault((schema.anyOf as Schema[]).map(renderSchema).join(' \\| '))
  switch (schema.type) {
    case 'string':
      return withDefault(`string${schema.format ? `<${schema.format}>` : ''}${range(schema.minLength, schema.maxLength)}`)
    case 'integer':
    case 'number':
      // zod gives every int the safe-integer bounds; only say what the input itself limits.
      return withDefault(`${schema.type === 'integer' ? 'int' : 'number'}${range(
        schema.minimum === Number.MIN_SAFE_INTEGER ? undefined : schema.minimum,
        schema.maximum === Number.MAX_SAFE_INTEGER ? undefined : schema.maximum,
      )}`)
    case 'boolean':
      return withDefault('boolean')
    case 'null':
      return 'null'
    case 'array':
      return withDefault(`${renderSchema((schema.items ?? {}) as Schema)}[]${range(schema.minItems, schema.maxItems)}`)
    case 'object': {
      const properties = (schema.properties ?? {}) as Record<string, Schema>
      const required = new Set((schema.required ?? []) as string[])
      if (Object.keys(properties).length === 0 && schema.additionalProperties)
        return `record<string, ${renderSchema(schema.additionalProperties === true ? {} : schema.additionalProperties as Schema)}>`
      const fields = Object.entries(properties).map(([name, property]) => `${name}${required.has(name) ? '' : '?'}: ${renderSchema(property)}`)
      return withDefault(`{ ${fields.join(', ')} }`)
    }
    default:
      return 'unknown'
  }
}

export function renderProcedureTable(entries: ProcedureEntry[]): string {
  const rows = entries.map(entry => `| \`${entry.path}\` | ${entry.type} | ${entry.access} | ${entry.input ? `\`${renderSchema(entry.input)}\`` : '—'} |`)
  return [START, '| procedure | kind | access | input |', '|---|---|---|---|', ...rows, END].join('\n')
}

async function main(): Promise<void> {
  await writeOrCheck(proceduresBlock, renderProcedureTable(describeProcedures()))
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1])
  await main()
