import { AsyncLocalStorage } from 'node:async_hooks'

import type { BetterAuthPlugin } from 'better-auth'
import { APIError } from 'better-auth/api'

import { outageError } from '../errors.ts'

/**
 * The database outage a better-auth call ran into, whatever better-auth made of it:
 * several of its routes catch a failed read and answer their own generic 500
 * ("Failed to get session"), which says nothing of the cause.
 */
const calls = new AsyncLocalStorage<{ failure?: unknown }>()

/** Errors this module made from an outage, so a transaction's wrapper does not wrap them again. */
const converted = new WeakSet<object>()

function rethrow(error: unknown): never {
  if (typeof error === 'object' && error !== null && converted.has(error))
    throw error
  if (!outageError(error))
    throw error
  const call = calls.getStore()
  if (call)
    call.failure ??= error
  // better-auth passes its own errors through where it wraps others (and does not log
  // them as its internal errors); the original stays the cause, for `outageError`.
  const unavailable = Object.assign(new APIError('SERVICE_UNAVAILABLE', { message: 'The service is temporarily unavailable; try again shortly', code: 'SERVICE_UNAVAILABLE' }), { cause: error })
  converted.add(unavailable)
  throw unavailable
}

/** `adapter` whose every call reports a database outage it fails with (transactions included). */
function outageAware<Adapter extends object>(adapter: Adapter): Adapter {
  return new Proxy(adapter, {
    get(target, key, receiver) {
      const value: unknown = Reflect.get(target, key, receiver)
      if (typeof value !== 'function')
        return value
      return (...args: unknown[]) => {
        // A transaction hands its callback an adapter of its own.
        const callback = args[0]
        if (key === 'transaction' && typeof callback === 'function')
          args[0] = (trx: object) => callback(outageAware(trx))
        try {
          const result: unknown = value.apply(target, args)
          return result instanceof Promise ? result.catch(rethrow) : result
        }
        catch (error) {
          rethrow(error)
        }
      }
    },
  })
}

/** A better-auth plugin (listed first) that puts `outageAware` around the database adapter every route and plugin uses. */
export function outageAwareDatabase() {
  return {
    id: 'airi-outage-aware-database',
    init: ctx => ({ context: { adapter: outageAware(ctx.adapter) } }),
  } satisfies BetterAuthPlugin
}

/**
 * Runs a better-auth call. If it fails (throws, or `failed` says so of its answer)
 * after its database was out of reach, the database's own error is thrown instead,
 * for the one outage mapping (`outageError`) to answer 503, whenever that happens.
 */
export async function surfaceOutage<T>(call: () => Promise<T>, failed: (result: T) => boolean = () => false): Promise<T> {
  const state: { failure?: unknown } = {}
  let result: T
  try {
    result = await calls.run(state, call)
  }
  catch (error) {
    throw state.failure ?? error
  }
  if (state.failure !== undefined && failed(result))
    throw state.failure
  return result
}
