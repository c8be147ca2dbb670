import { createMemoryAdapters } from './memory.ts'
import type { Adapters } from './ports.ts'
import { createRedisAdapters } from './redis.ts'

export * from './keys.ts'
export type * from './ports.ts'
export { createMemoryAdapters } from './memory.ts'
export { createRedisAdapters } from './redis.ts'

/** Redis when a URL is configured (shared by every instance), in-process otherwise. */
export function createAdapters(options: { redisUrl?: string, prefix?: string }): Promise<Adapters> {
  return options.redisUrl
    ? createRedisAdapters({ url: options.redisUrl, prefix: options.prefix })
    : Promise.resolve(createMemoryAdapters())
}
