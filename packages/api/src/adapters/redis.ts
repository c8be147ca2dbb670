import { Redis } from 'ioredis'

import type { Adapters, AtomicCounters, Cache, MessageHandler, PubSub } from './ports.ts'

// Fixed window: the first hit of a window sets its expiry.
const HIT_WINDOW = `
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return { count, ttl }
`

// Flux meter: add the units, refresh the TTL, take out every whole Flux.
const SETTLE_DEBT = `
local debt = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local per = tonumber(ARGV[2])
local flux = math.floor(debt / per)
if flux > 0 then debt = redis.call('DECRBY', KEYS[1], flux * per) end
return { flux, debt }
`

const ADD_DEBT = `
local debt = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return debt
`

export interface RedisAdaptersOptions {
  url: string
  /** Prepended to every key and channel, so deployments (or test files) can share a server. */
  prefix?: string
}

// The command connection fails fast while disconnected instead of queueing: callers
// treat Redis as best effort (caches) or report it (readiness), and must not hang.
// The subscriber queues, so a subscribe during a blip lands once it reconnects.
function connect(url: string, queueWhileOffline: boolean): Redis {
  return new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: queueWhileOffline,
    maxRetriesPerRequest: 1,
    retryStrategy: times => Math.min(times * 100, 1000),
  })
}

export async function createRedisAdapters({ url, prefix = '' }: RedisAdaptersOptions): Promise<Adapters> {
  const client = connect(url, false)
  // Subscribed connections cannot run other commands, so pub/sub gets its own.
  const subscriber = connect(url, true)
  // ioredis emits 'error' on every failed reconnect; the readiness probe reports it.
  client.on('error', () => {})
  subscriber.on('error', () => {})
  await Promise.all([client.connect(), subscriber.connect()])

  const cache: Cache = {
    async get(key) {
      return client.get(prefix + key)
    },
    async set(key, value, ttlSeconds) {
      if (ttlSeconds === undefined)
        await client.set(prefix + key, value)
      else
        await client.set(prefix + key, value, 'EX', ttlSeconds)
    },
    async del(...keys) {
      if (keys.length > 0)
        await client.del(...keys.map(key => prefix + key))
    },
  }

  const handlers = new Map<string, Set<MessageHandler>>()
  subscriber.on('message', (channel: string, message: string) => {
    for (const handler of [...(handlers.get(channel) ?? [])]) {
      try {
        handler(message)
      }
      catch {
        // A handler's failure must not stop delivery to the others.
      }
    }
  })

  const pubsub: PubSub = {
    async publish(channel, message) {
      await client.publish(prefix + channel, message)
    },
    async subscribe(channel, handler) {
      const name = prefix + channel
      const subscription: MessageHandler = message => handler(message)
      let set = handlers.get(name)
      if (!set) {
        set = new Set()
        handlers.set(name, set)
        await subscriber.subscribe(name)
      }
      set.add(subscription)
      return async () => {
        set.delete(subscription)
        if (set.size === 0 && handlers.get(name) === set) {
          handlers.delete(name)
          await subscriber.unsubscribe(name).catch(() => {})
        }
      }
    },
  }

  const counters: AtomicCounters = {
    async hitWindow(key, windowSeconds) {
      const [count, ttl] = await client.eval(HIT_WINDOW, 1, prefix + key, Math.ceil(windowSeconds * 1000)) as [number, number]
      return { count, resetInMs: ttl }
    },
    async settleDebt(key, units, unitsPerFlux, ttlSeconds) {
      const [settledFlux, debt] = await client.eval(SETTLE_DEBT, 1, prefix + key, units, unitsPerFlux, ttlSeconds) as [number, number]
      return { settledFlux, debt }
    },
    async addDebt(key, units, ttlSeconds) {
      return await client.eval(ADD_DEBT, 1, prefix + key, units, ttlSeconds) as number
    },
    async peekDebt(key) {
      return Number(await client.get(prefix + key) ?? 0)
    },
  }

  return {
    kind: 'redis',
    cache,
    pubsub,
    counters,
    async ping() {
      await client.ping()
    },
    async close() {
      await Promise.allSettled([client.quit(), subscriber.quit()])
      client.disconnect()
      subscriber.disconnect()
    },
  }
}
