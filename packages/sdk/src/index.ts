export { createAiriClient, type AiriClient, type AiriClientOptions, type TokenGetter, type WebSocketConstructor } from './client.ts'
