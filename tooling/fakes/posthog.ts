import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { gunzipSync } from 'node:zlib'

import { answer } from './http.ts'

/** One event as PostHog's capture API received it. */
export interface FakePosthogEvent {
  event: string
  distinctId: string
  properties: Record<string, unknown>
  uuid?: string
  timestamp?: string
  /** The project key the batch was sent with. */
  apiKey: string
}

export interface FakePosthog {
  /** The origin, as POSTHOG_HOST. */
  url: string
  apiKey: string
  /**
   * What `createApi({ posthog })` takes to use this fake: small batches sent at
   * once and no retries, so tests see events quickly and outages do not pile up.
   */
  settings: { apiKey: string, host: string, flushAt: number, flushIntervalMs: number, fetchRetryCount: number, requestTimeoutMs: number }
  /** Every event received (and answered 200), in arrival order. */
  events: FakePosthogEvent[]
  /** Capture requests received, answered or not. */
  requests: () => number
  /** Answer every capture request with `status` (an outage) until called with undefined. */
  failWith: (status: number | undefined) => void
  /** Resolves with the first event (already received or still to come) that matches. */
  waitForEvent: (predicate: (event: FakePosthogEvent) => boolean, timeoutMs?: number) => Promise<FakePosthogEvent>
  /** Stops listening and drops open connections: PostHog unreachable. */
  close: () => Promise<void>
}

interface WireEvent {
  event?: unknown
  distinct_id?: unknown
  properties?: unknown
  uuid?: unknown
  timestamp?: unknown
  api_key?: unknown
}

async function readRaw(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of req)
    chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/**
 * A local stand-in for PostHog's capture API: `POST /batch/` as `posthog-node`
 * sends it (`{ api_key, batch: [...] }`, gzipped when `Content-Encoding: gzip`),
 * and single events (`/capture/`, `/e/`, `/i/v0/e/`). A wrong project key is
 * answered 401, as PostHog does.
 */
export async function startFakePosthog({ apiKey = 'phc_test_fake_key' }: { apiKey?: string } = {}): Promise<FakePosthog> {
  const events: FakePosthogEvent[] = []
  const waiters = new Set<(event: FakePosthogEvent) => void>()
  let requests = 0
  let failing: number | undefined

  const server = createServer((req, res) => {
    void (async () => {
      if (req.method !== 'POST')
        return answer(res, 404, { type: 'validation_error', detail: 'Not found' })
      const raw = await readRaw(req)
      requests++
      if (failing !== undefined)
        return answer(res, failing, { type: 'server_error', detail: 'fake outage' })
      const text = (req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString('utf8')
      const body = JSON.parse(text) as WireEvent & { batch?: WireEvent[] }
      const batch = Array.isArray(body.batch) ? body.batch : [body]
      const key = body.api_key
      if (key !== apiKey)
        return answer(res, 401, { type: 'authentication_error', detail: 'Project API key invalid' })
      for (const wire of batch) {
        const event: FakePosthogEvent = {
          event: String(wire.event),
          distinctId: String(wire.distinct_id),
          properties: (wire.properties ?? {}) as Record<string, unknown>,
          uuid: typeof wire.uuid === 'string' ? wire.uuid : undefined,
          timestamp: typeof wire.timestamp === 'string' ? wire.timestamp : undefined,
          apiKey: key,
        }
        events.push(event)
        for (const waiter of waiters)
          waiter(event)
      }
      answer(res, 200, { status: 1 })
    })().catch((error: unknown) => {
      answer(res, 400, { type: 'validation_error', detail: error instanceof Error ? error.message : String(error) })
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`

  return {
    url,
    apiKey,
    settings: { apiKey, host: url, flushAt: 1, flushIntervalMs: 50, fetchRetryCount: 0, requestTimeoutMs: 5_000 },
    events,
    requests: () => requests,
    failWith(status) {
      failing = status
    },
    waitForEvent(predicate, timeoutMs = 20_000) {
      const found = events.find(predicate)
      if (found)
        return Promise.resolve(found)
      return new Promise((resolve, reject) => {
        const waiter = (event: FakePosthogEvent) => {
          if (!predicate(event))
            return
          clearTimeout(timer)
          waiters.delete(waiter)
          resolve(event)
        }
        const timer = setTimeout(() => {
          waiters.delete(waiter)
          reject(new Error(`fake PostHog: no matching event within ${timeoutMs} ms (${events.length} received: ${events.map(event => event.event).join(', ')})`))
        }, timeoutMs)
        waiters.add(waiter)
      })
    },
    async close() {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => resolve()))
    },
  }
}
