// The auth-read baseline: a tRPC procedure that returns a constant, on the same
// Fastify and tRPC adapter versions (and the same superjson transformer) the
// server uses, resolved from the benchmarked checkout. Reports its URL over IPC.
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const serverRoot = process.argv[2] ?? process.cwd()
const fromServer = createRequire(join(serverRoot, 'apps/server/package.json'))
const fromApi = createRequire(join(serverRoot, 'packages/api/package.json'))
const load = async <T>(require: NodeJS.Require, specifier: string): Promise<T> => import(pathToFileURL(require.resolve(specifier)).href) as Promise<T>

/* eslint-disable @typescript-eslint/no-explicit-any -- modules loaded from another checkout at run time */
const { default: Fastify } = await load<any>(fromServer, 'fastify')
const { initTRPC } = await load<any>(fromServer, '@trpc/server')
const { fastifyTRPCPlugin } = await load<any>(fromServer, '@trpc/server/adapters/fastify')
const { default: superjson } = await load<any>(fromApi, 'superjson')
/* eslint-enable @typescript-eslint/no-explicit-any */

const t = initTRPC.create({ transformer: superjson })
const router = t.router({ bench: t.router({ constant: t.procedure.query(() => ({ ok: true, value: 42 })) }) })
const app = Fastify({ logger: false })
await app.register(fastifyTRPCPlugin, { prefix: '/trpc', trpcOptions: { router, createContext: () => ({}) } })
await app.listen({ host: '127.0.0.1', port: 0 })
const address = app.server.address() as { port: number }
process.send!({ url: `http://127.0.0.1:${address.port}` })
process.on('SIGTERM', () => void app.close().finally(() => process.exit(0)))
