import type { FastifyPluginAsync } from 'fastify'

export interface ProbesOptions {
  service: { name: string, version: string }
  /** Named readiness checks; each rejects when its dependency is unavailable. */
  checks: Record<string, () => Promise<void>>
  checkTimeoutMs?: number
}

type CheckStatus = { status: 'ok' } | { status: 'error', error: string }

function withTimeout(check: () => Promise<void>, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms)
    check().then(resolve, reject).finally(() => clearTimeout(timer))
  })
}

/** Kubernetes-style probes. They stay out of the request log unless something is wrong. */
export const probesPlugin: FastifyPluginAsync<ProbesOptions> = async (app, { service, checks, checkTimeoutMs = 2000 }) => {
  app.get('/', { logLevel: 'warn' }, async () => ({ service: service.name, version: service.version }))

  app.get('/livez', { logLevel: 'warn' }, async () => ({ status: 'ok' }))

  app.get('/readyz', { logLevel: 'warn' }, async (_request, reply) => {
    const results = await Promise.all(Object.entries(checks).map(async ([name, check]): Promise<[string, CheckStatus]> => {
      try {
        await withTimeout(check, checkTimeoutMs)
        return [name, { status: 'ok' }]
      }
      catch (error) {
        return [name, { status: 'error', error: error instanceof Error ? error.message : String(error) }]
      }
    }))
    const ready = results.every(([, result]) => result.status === 'ok')
    return reply.status(ready ? 200 : 503).send({ status: ready ? 'ok' : 'unavailable', checks: Object.fromEntries(results) })
  })
}
