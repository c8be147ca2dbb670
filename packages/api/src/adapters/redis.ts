import { randomUUID } from 'node:crypto'

import { Redis } from 'ioredis'

import { createChannelJoins, deliver } from './channels.ts'
import type { AdapterHooks, Adapters, AtomicCounters, Cache, PubSub } from './ports.ts'

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

// Guarded entries are hashes: `v` the value (absent on a miss), `g` the version
// the last invalidation set. A fill lands only on a miss whose version is still
// the one its reader saw.
const FILL_GUARDED = `
local v, g = unpack(redis.call('HMGET', KEYS[1], 'v', 'g'))
if v or (g or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'g', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
`

const INVALIDATE_GUARDED = `
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'g', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
`

/** The scripts above as commands of the command connection; each takes its one key first. */
interface Scripts {
  airiHitWindow: (key: string, windowMs: number) => Promise<[count: number, ttlMs: number]>
  airiSettleDebt: (key: string, units: number, unitsPerFlux: number, ttlSeconds: number) => Promise<[settledFlux: number, debt: number]>
  airiAddDebt: (key: string, units: number, ttlSeconds: number) => Promise<number>
  airiFillGuarded: (key: string, value: string, version: string, ttlSeconds: number) => Promise<0 | 1>
  airiInvalidateGuarded: (key: string, version: string, ttlSeconds: number) => Promise<null>
}

// ioredis sends a script's text once per connection (EVAL) and then only its SHA
// (EVALSHA, sending the text again if the server answers NOSCRIPT), so a streamed
// LLM call's several scripts do not each carry their source to Redis.
function withScripts(client: Redis): Redis & Scripts {
  const scripts: Record<keyof Scripts, string> = {
    airiHitWindow: HIT_WINDOW,
    airiSettleDebt: SETTLE_DEBT,
    airiAddDebt: ADD_DEBT,
    airiFillGuarded: FILL_GUARDED,
    airiInvalidateGuarded: INVALIDATE_GUARDED,
  }
  for (const [name, lua] of Object.entries(scripts))
    client.defineCommand(name, { numberOfKeys: 1, lua })
  return client as Redis & Scripts
}

export interface RedisAdaptersOptions extends AdapterHooks {
  url: string
  /** Prepended to every key and channel, so deployments (or test files) can share a server. */
  prefix?: string
}

// The command connection fails fast while disconnected instead of queueing: callers
// treat Redis as best effort (caches) or report it (readiness), and must not hang.
// The subscriber queues, so a subscribe during a blip lands once it reconnects. It
// subscribes again itself (below): ioredis's own resubscription leaves its SUBSCRIBE's
// promise unhandled, and a connection lost again before the answer would reject it and
// end the process.
function connect(url: string, subscriber: boolean): Redis {
  return new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: subscriber,
    autoResubscribe: !subscriber,
    maxRetriesPerRequest: 1,
    retryStrategy: times => Math.min(times * 100, 1000),
  })
}

export async function createRedisAdapters({ url, prefix = '', beforeSubscribe }: RedisAdaptersOptions): Promise<Adapters> {
  const client = withScripts(connect(url, false))
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
    async take(key) {
      return client.getdel(prefix + key)
    },
    async read(key) {
      const [value, version] = await client.hmget(prefix + key, 'v', 'g')
      return { value: value ?? null, version: version ?? '' }
    },
    async fill(key, value, version, ttlSeconds) {
      return await client.airiFillGuarded(prefix + key, value, version, Math.max(1, Math.ceil(ttlSeconds))) === 1
    },
    async invalidate(key, ttlSeconds) {
      await client.airiInvalidateGuarded(prefix + key, randomUUID(), Math.max(1, Math.ceil(ttlSeconds)))
    },
  }

  // Channels by their name in Redis (prefixed); every local subscriber of one waits for its one SUBSCRIBE.
  const joins = createChannelJoins({
    async open(name) {
      await beforeSubscribe?.(name.slice(prefix.length))
      await subscriber.subscribe(name)
    },
    async close(name) {
      await subscriber.unsubscribe(name).catch(() => {})
    },
  })
  subscriber.on('message', (name: string, message: string) => {
    for (const handler of joins.handlers(name))
      deliver(handler, message)
  })

  // After a reconnection every joined channel is subscribed again; a PING queued
  // behind that SUBSCRIBE answers once it is in force, and only then are listeners
  // told. A failure (the connection lost again) waits for the next 'ready'.
  // `down` spans the whole outage (every failed reconnect closes again), so
  // `onDown` listeners hear of it once, and it ends only with that PING.
  const resubscribed = new Set<() => void>()
  const wentDown = new Set<() => void>()
  let dropped = false
  let down = false
  let closing = false
  const tell = (listeners: Set<() => void>) => {
    for (const listener of [...listeners])
      listener()
  }
  subscriber.on('close', () => {
    dropped = true
    if (down || closing)
      return
    down = true
    tell(wentDown)
  })
  subscriber.on('ready', () => {
    if (!dropped)
      return
    dropped = false
    const names = joins.names()
    void (names.length > 0 ? subscriber.subscribe(...names) : Promise.resolve())
      .then(() => subscriber.ping())
      .then(() => {
        down = false
        tell(resubscribed)
      }, () => {})
  })

  const pubsub: PubSub = {
    onResubscribed(listener) {
      resubscribed.add(listener)
      return () => resubscribed.delete(listener)
    },
    onDown(listener) {
      wentDown.add(listener)
      if (down)
        setImmediate(() => {
          if (down && wentDown.has(listener))
            listener()
        })
      return () => wentDown.delete(listener)
    },
    async publish(channel, message) {
      await client.publish(prefix + channel, message)
    },
    async subscribe(channel, handler) {
      return joins.join(prefix + channel, handler)
    },
  }

  const counters: AtomicCounters = {
    async hitWindow(key, windowSeconds) {
      const [count, ttl] = await client.airiHitWindow(prefix + key, Math.ceil(windowSeconds * 1000))
      return { count, resetInMs: ttl }
    },
    async settleDebt(key, units, unitsPerFlux, ttlSeconds) {
      const [settledFlux, debt] = await client.airiSettleDebt(prefix + key, units, unitsPerFlux, ttlSeconds)
      return { settledFlux, debt }
    },
    async addDebt(key, units, ttlSeconds) {
      return await client.airiAddDebt(prefix + key, units, ttlSeconds)
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
      closing = true
      await Promise.allSettled([client.quit(), subscriber.quit()])
      client.disconnect()
      subscriber.disconnect()
    },
  }
}
