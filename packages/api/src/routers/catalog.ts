import { z } from 'zod'

import type { ProcedureMeta } from '../trpc.ts'
import { appRouter } from './root.ts'

export interface ProcedureEntry {
  path: string
  type: 'query' | 'mutation' | 'subscription'
  access: ProcedureMeta['access']
  /** JSON Schema of the input, or null for procedures without one. */
  input: Record<string, unknown> | null
}

interface ProcedureDef {
  type: ProcedureEntry['type']
  meta?: ProcedureMeta
  inputs: z.ZodType[]
}

/** Every procedure of the router with its access level and input schema, for the API reference. */
export function describeProcedures(): ProcedureEntry[] {
  const procedures = appRouter._def.procedures as unknown as Record<string, { _def: ProcedureDef }>
  return Object.entries(procedures)
    .map(([path, procedure]) => {
      const { type, meta, inputs } = procedure._def
      const input = inputs[0] ? z.toJSONSchema(inputs[0], { io: 'input', unrepresentable: 'any' }) as Record<string, unknown> : null
      return { path, type, access: meta?.access ?? 'public', input }
    })
    .sort((a, b) => a.path.localeCompare(b.path))
}
