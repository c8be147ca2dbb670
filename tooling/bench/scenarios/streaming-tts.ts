import { performance } from 'node:perf_hooks'

import WebSocket from 'ws'

import { trpcCall } from '../deployment.ts'
import { formatNumber, formatSigned, formatSummary, percentile, summarize } from '../stats.ts'
import { opened } from '../subscribers.ts'
import { REQUEST_DEADLINE_MS, type BenchContext, type Scenario } from '../context.ts'

const SENTENCE = 'Hello there, this is the first sentence. '
const SPEECH_SOCKET_PATH = '/api/v1/audio/speech/ws'

/**
 * Opens a socket, sends `start`, waits for `session.started`, then times the first
 * text frame to the first audio byte. A socket that closes or stalls fails it.
 */
async function firstAudio(url: string, headers: Record<string, string>): Promise<number> {
  const ws = new WebSocket(url, { headers })
  let timer: NodeJS.Timeout | undefined
  const failed = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`speech session: no audio within ${REQUEST_DEADLINE_MS} ms`)), REQUEST_DEADLINE_MS)
    ws.once('close', code => reject(new Error(`speech socket closed (${code})`)))
    ws.once('error', reject)
    ws.on('message', (data, isBinary) => {
      if (!isBinary && String(data).includes('"error"'))
        reject(new Error(`speech session failed: ${String(data)}`))
    })
  })
  failed.catch(() => {})
  try {
    await Promise.race([opened(ws), failed])
    const started = new Promise<void>(resolve => ws.on('message', (data, isBinary) => !isBinary && String(data).includes('session.started') && resolve()))
    ws.send(JSON.stringify({ event: 'start', model: 'm', voice: 'v' }))
    await Promise.race([started, failed])
    const audio = new Promise<number>(resolve => ws.on('message', (_data, isBinary) => isBinary && resolve(performance.now())))
    const sent = performance.now()
    ws.send(JSON.stringify({ event: 'text', text: SENTENCE }))
    const elapsed = await Promise.race([audio, failed]) - sent
    ws.send(JSON.stringify({ event: 'cancel' }))
    return elapsed
  }
  finally {
    clearTimeout(timer)
    if (ws.readyState === WebSocket.OPEN)
      ws.close()
    else
      ws.terminate()
  }
}

/** First-audio latency through our speech socket against the fake streaming upstream directly. */
export const streamingTts: Scenario = {
  name: 'streaming-tts',
  quick: true,
  async run(context: BenchContext) {
    const runs = context.quick ? 5 : 40
    const users = context.deployment.users
    let turn = 0
    const ours = async () => {
      const user = users[turn++ % users.length]!
      const { ticket } = await trpcCall<{ ticket: string }>(context.server.url, user.token, 'audio.createSpeechTicket', undefined, 'mutation')
      return firstAudio(`${context.server.url.replace(/^http/, 'ws')}${SPEECH_SOCKET_PATH}?ticket=${encodeURIComponent(ticket)}`, {})
    }
    const direct = () => firstAudio(context.infra.fakes.ttsUrl, { authorization: `Bearer ${context.deployment.ttsKey}` })
    const added = { p50: [] as number[], p99: [] as number[] }
    const base = { p50: [] as number[] }
    const mine = { p50: [] as number[] }
    for (let round = 0; round < context.rounds; round++) {
      const d: number[] = []
      const o: number[] = []
      for (let index = 0; index < runs; index++) {
        d.push(await direct())
        o.push(await ours())
      }
      base.p50.push(percentile(d, 50))
      mine.p50.push(percentile(o, 50))
      added.p50.push(percentile(o, 50) - percentile(d, 50))
      added.p99.push(percentile(o, 99) - percentile(d, 99))
      context.log(`streaming-tts round ${round + 1}: direct p50 ${formatNumber(base.p50.at(-1)!)} ms, ours ${formatNumber(mine.p50.at(-1)!)} ms`)
    }
    return [{
      scenario: 'streaming-tts',
      metric: `first audio after the first text frame, p50 (${runs} sessions/round)`,
      baseline: `direct ${formatSummary(summarize(base.p50), 'ms')}`,
      ours: formatSummary(summarize(mine.p50), 'ms'),
      ratio: `${formatSigned(summarize(added.p50).median)} ms (p99 ${formatSigned(summarize(added.p99).median)} ms)`,
      target: '—',
      met: null,
      data: { directP50: summarize(base.p50), oursP50: summarize(mine.p50), addedP50: summarize(added.p50), addedP99: summarize(added.p99) },
    }]
  },
}
