export { createAiriClient, type AiriClient, type AiriClientOptions, type TokenGetter, type WebSocketConstructor } from './client.ts'
// Every failed call rejects with this; `error.data` carries `code`, `httpStatus`,
// the domain `apiCode`, `details` and, for bad input, `fieldErrors`.
export { TRPCClientError } from '@trpc/client'
