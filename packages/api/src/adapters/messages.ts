import type { z } from 'zod'

import type { Logger } from '../logger.ts'

/**
 * One kind of pub/sub payload (SPEC §1): `create` validates and serialises it,
 * `parse` validates what arrives and drops (and logs) anything malformed, so a
 * bad publisher can never break a subscriber.
 */
export function pubsubMessage<T>(schema: z.ZodType<T>, what: string) {
  return {
    create: (value: T): string => JSON.stringify(schema.parse(value)),
    parse(raw: string, logger: Logger): T | undefined {
      try {
        return schema.parse(JSON.parse(raw))
      }
      catch (error) {
        logger.warn({ err: error, raw }, `dropping malformed ${what}`)
        return undefined
      }
    },
  }
}
