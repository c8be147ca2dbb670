import { createAiriClient } from '@airi/sdk'

import { baseUrl, getAccessToken } from './session.ts'

/** The one API client of the app: tRPC over HTTP batching and a WebSocket for live sync. */
export const client = createAiriClient({ baseUrl, getToken: getAccessToken })

/** A readable message for any failed call. */
export function errorMessage(error: unknown): string {
  const data = (error as { data?: { apiCode?: string, httpStatus?: number } }).data
  if (data?.apiCode === 'INSUFFICIENT_FLUX')
    return 'Not enough Flux. Top up on the Flux page.'
  if (data?.httpStatus === 401)
    return 'Your session has ended. Sign in again.'
  if (error instanceof TypeError)
    return 'Cannot reach the server. Check your connection.'
  return error instanceof Error ? error.message : String(error)
}
