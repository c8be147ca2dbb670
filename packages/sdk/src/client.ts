import { createTRPCClient, createWSClient, httpBatchLink, splitLink, wsLink } from '@trpc/client'
import type { OperationLink, TRPCClient, TRPCLink } from '@trpc/client'
import superjson from 'superjson'

import { createRestApi, type RestApi } from './rest.ts'

// Only the router's type crosses from the server: no server code in the bundle.
import type { AppRouter } from '@airi/api'

export type TokenGetter = () => string | null | undefined | Promise<string | null | undefined>

/** The constructor shape tRPC's WebSocket link needs; browsers' and the `ws` package's both fit. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket

export interface AiriClientOptions {
  /** The server's origin, e.g. `https://api.example.com` (no trailing `/trpc`). */
  baseUrl: string
  /** A session token or an OIDC access token; read before every request and (re)connection. */
  getToken?: TokenGetter
  /**
   * The person's language (a BCP 47 tag), sent as `Accept-Language` on queries and
   * mutations: the server picks a character's prompts and a new chat's greeting in it.
   * Without it, the runtime's own header applies (a browser's settings).
   */
  getLanguage?: () => string | undefined
  /** Defaults to the global WebSocket; pass `ws` on Node versions without one. */
  WebSocket?: WebSocketConstructor
  /** Defaults to the global fetch. */
  fetch?: typeof fetch
}

export type AiriClient = TRPCClient<AppRouter> & {
  /** The REST routes a client reads besides tRPC (catalogues, speech, downloads). */
  rest: RestApi
  /** Closes the subscription WebSocket (it opens lazily on the first subscription). */
  close: () => Promise<void>
}

function trpcUrl(baseUrl: string, protocol: 'http' | 'ws'): string {
  const url = new URL('trpc', baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`)
  if (protocol === 'ws')
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  return url.toString()
}

/**
 * The typed AIRI client: queries and mutations go over batched HTTP, subscriptions
 * over one WebSocket whose connection params carry the token.
 */
export function createAiriClient({ baseUrl, getToken, getLanguage, WebSocket, fetch }: AiriClientOptions): AiriClient {
  const token = async () => (await getToken?.()) ?? undefined

  // The WebSocket client is made on the first subscription, so HTTP-only callers
  // (e.g. Node without a global WebSocket) never need one.
  let wsClient: ReturnType<typeof createWSClient> | undefined
  const subscriptionLink: TRPCLink<AppRouter> = (runtime) => {
    let link: OperationLink<AppRouter> | undefined
    return (operation) => {
      wsClient ??= createWSClient({
        url: trpcUrl(baseUrl, 'ws'),
        WebSocket: WebSocket as typeof globalThis.WebSocket | undefined,
        lazy: { enabled: true, closeMs: 0 },
        connectionParams: async () => {
          const value = await token()
          return value ? { token: value } : {}
        },
      })
      link ??= wsLink<AppRouter>({ client: wsClient, transformer: superjson })(runtime)
      return link(operation)
    }
  }

  const client = createTRPCClient<AppRouter>({
    links: [
      splitLink({
        condition: op => op.type === 'subscription',
        true: subscriptionLink,
        false: httpBatchLink({
          url: trpcUrl(baseUrl, 'http'),
          // The server's default TRPC_MAX_BATCH_SIZE; larger bursts go as several requests.
          maxItems: 50,
          transformer: superjson,
          fetch,
          headers: async () => {
            const value = await token()
            const language = getLanguage?.()
            return { ...(value ? { authorization: `Bearer ${value}` } : {}), ...(language ? { 'accept-language': language } : {}) }
          },
        }),
      }),
    ],
  })

  const close = async () => {
    await wsClient?.close()
  }
  const rest = createRestApi({ baseUrl, getToken: token, fetch })
  // tRPC's client is a proxy that reads every property as a router path, so `close`
  // and `rest` are layered on with a proxy of our own rather than assigned.
  return new Proxy(client, {
    get: (target, key) => (key === 'close' ? close : key === 'rest' ? rest : Reflect.get(target, key)),
  }) as AiriClient
}
