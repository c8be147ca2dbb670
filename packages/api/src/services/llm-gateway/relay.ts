import type { Clock } from '../../clock.ts'
import type { UpstreamResponse } from './router.ts'
import { errorEvent, type Failure } from './failure.ts'
import { createStreamWatcher, type TextTally, type Usage } from './usage.ts'

/** What a stream relayed: the upstream's usage if it sent one, the generated text, and when that text began. */
interface Relayed {
  usage: Usage | undefined
  completion: TextTally
  /** When the first chunk carrying generated text arrived (`clock` time); undefined when none did. */
  firstTextAt: number | undefined
}

export interface RelayOptions {
  response: UpstreamResponse
  /** The call's signal: the client leaving, the deadline, the shutdown. */
  signal: AbortSignal
  failureOf: (error: unknown) => Failure
  /** Times the first generated text. */
  clock: Clock
  /** Awaited before the first chunk is handed out; a rejection ends the stream as a failure. */
  beforeFirstChunk?: () => Promise<void>
  /** Told when the first chunk is handed out. */
  onFirstText: () => void
  /** Called once, whichever way the stream ends, with what was relayed. */
  end: (relayed: Relayed, outcome: { status: number, error?: string }) => Promise<void>
}

/**
 * Relays an upstream's event stream chunk by chunk, counting what the consumer
 * took, and ends it once: after the last chunk, on a failure (an error event when
 * the consumer still reads), or when the call is cut short, even before the
 * consumer began reading.
 */
export function relayStream({ response, signal, failureOf, clock, beforeFirstChunk, onFirstText, end }: RelayOptions): AsyncGenerator<string> {
  const watcher = createStreamWatcher()
  let firstTextAt: number | undefined
  let started = false
  let ended = false

  /** Counts a relayed chunk; the first one that brings generated text dates the first token. */
  function relayed(text: string, arrivedAt: number): void {
    watcher.feed(text)
    if (firstTextAt === undefined && watcher.completion.chars > 0)
      firstTextAt = arrivedAt
  }

  async function finish(outcome: { status: number, error?: string }): Promise<void> {
    if (ended)
      return
    ended = true
    await end({ usage: watcher.usage, completion: watcher.completion, firstTextAt }, outcome)
  }

  // A stream cut short before the transport began reading it ends here.
  const endUnstarted = (): void => {
    if (started)
      return
    response.cancel()
    const failure = failureOf(signal.reason)
    void finish({ status: failure.status, error: failure.message })
  }
  if (signal.aborted)
    endUnstarted()
  else
    signal.addEventListener('abort', endUnstarted, { once: true })

  async function* relay(): AsyncGenerator<string> {
    started = true
    let outcome: { status: number, error?: string } | undefined
    // True while the consumer holds a chunk; still true here means it stopped reading.
    let handedOut = false
    let handedFirst = false
    const decoder = new TextDecoder()
    try {
      for await (const bytes of response.chunks) {
        const text = decoder.decode(bytes, { stream: true })
        if (!text)
          continue
        const arrivedAt = clock.now()
        if (!handedFirst) {
          handedFirst = true
          await beforeFirstChunk?.()
          onFirstText()
        }
        handedOut = true
        yield text
        handedOut = false
        // Counted once the transport has taken it: what was relayed, not what was read.
        relayed(text, arrivedAt)
      }
      const rest = decoder.decode()
      if (rest) {
        const arrivedAt = clock.now()
        handedOut = true
        yield rest
        handedOut = false
        relayed(rest, arrivedAt)
      }
      outcome = { status: response.status }
    }
    catch (error) {
      const failure = failureOf(error)
      outcome = { status: failure.status, error: failure.message }
      // A consumer that stopped reading takes no error event (and waiting for it would never settle).
      if (failure.status !== 499 && !handedOut)
        yield errorEvent(failure)
    }
    finally {
      // Unset: the consumer stopped reading, because its client left or the call was cut short.
      if (!outcome) {
        const failure = failureOf(signal.reason)
        outcome = signal.aborted ? { status: failure.status, error: failure.message } : { status: 499, error: 'client went away' }
      }
      await finish(outcome)
    }
  }
  return relay()
}
