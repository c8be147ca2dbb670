import { z } from 'zod'

/** Input pieces several routers share. */

/** A row id (ours are UUIDs; client-chosen message ids fit too). */
export const id = z.string().min(1).max(100)

/** A JSON object (a capability's, avatar model's or provider's `config`), at most 64 KiB as JSON. */
export const jsonObject = z.record(z.string().min(1).max(200), z.json())
  .refine(value => JSON.stringify(value).length <= 65_536, 'Must be at most 64 KiB of JSON')
