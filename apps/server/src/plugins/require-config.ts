import type { preHandlerAsyncHookHandler } from 'fastify'

import type { Api, ConfigKey } from '@airi/api'

/**
 * A route guard: answers 503 `CONFIG_NOT_SET` naming the first of `keys` that has
 * no value, before the handler runs. The rest of the service keeps working.
 */
export function requireConfig(api: Api, ...keys: ConfigKey[]): preHandlerAsyncHookHandler {
  return async () => {
    await api.services.config.require(...keys)
  }
}
