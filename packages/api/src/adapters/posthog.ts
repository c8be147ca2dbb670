import { PostHog } from 'posthog-node'

import type { Logger } from '../logger.ts'

/** POSTHOG_KEY and POSTHOG_HOST, plus the client's batching (defaults suit production). */
export interface PosthogSettings {
  /** The project API key (`phc_…`). */
  apiKey: string
  /** PostHog's ingestion origin; PostHog Cloud US by default. */
  host?: string
  /** Events queued before a send starts (default 20). */
  flushAt?: number
  /** Longest an event waits in the queue (default 10 s). */
  flushIntervalMs?: number
  /** Bound of one send (default 5 s). */
  requestTimeoutMs?: number
  /** Retries of a failed send (default 2). */
  fetchRetryCount?: number
  /** Bound of the last flush at shutdown (default 3 s). */
  shutdownTimeoutMs?: number
}

/** One product event about one user. */
interface AnalyticsEvent {
  distinctId: string
  event: string
  properties?: Record<string, unknown>
}

/** Where product events go: queued and sent later, never awaited by a request. */
export interface AnalyticsSink {
  /** Queues the event; never throws and never waits on the network. */
  capture: (event: AnalyticsEvent) => void
  /** Sends what is still queued, within a bound; never throws. */
  close: () => Promise<void>
}

/** Without POSTHOG_KEY: events go nowhere. */
export const noopAnalyticsSink: AnalyticsSink = {
  capture() {},
  async close() {},
}

/**
 * PostHog through `posthog-node`: events are queued in memory and sent in batches
 * by the client (`flushAt` / `flushIntervalMs`). A failed send is logged and the
 * events dropped (or kept for the next send when PostHog could not be reached; the
 * queue is bounded by the client), so an outage of PostHog never reaches a request.
 */
export function createPosthogSink(settings: PosthogSettings, logger: Logger): AnalyticsSink {
  const client = new PostHog(settings.apiKey, {
    host: settings.host,
    flushAt: settings.flushAt ?? 20,
    flushInterval: settings.flushIntervalMs ?? 10_000,
    requestTimeout: settings.requestTimeoutMs ?? 5_000,
    fetchRetryCount: settings.fetchRetryCount ?? 2,
    fetchRetryDelay: 1_000,
    // Server-side events carry no client address worth locating.
    disableGeoip: true,
  })
  client.on('error', (error: unknown) => {
    logger.warn({ err: error }, 'PostHog: sending events failed')
  })
  return {
    capture(event) {
      try {
        client.capture(event)
      }
      catch (error) {
        logger.warn({ err: error, event: event.event }, 'PostHog: could not queue an event')
      }
    },
    async close() {
      try {
        await client.shutdown(settings.shutdownTimeoutMs ?? 3_000)
      }
      catch (error) {
        logger.warn({ err: error }, 'PostHog: the last flush failed; queued events are lost')
      }
    },
  }
}
