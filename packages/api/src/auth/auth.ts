import { betterAuth } from 'better-auth'

import { createAuthOptions, type AuthOptionsDeps } from './options.ts'

/** The better-auth instance: its handler serves `/api/auth/*`, its `api` is called in-process. */
export function createAuth(deps: AuthOptionsDeps) {
  const options = createAuthOptions(deps)
  return betterAuth(options)
}

export type Auth = ReturnType<typeof createAuth>
