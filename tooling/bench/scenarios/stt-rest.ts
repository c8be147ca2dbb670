import { readFile } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'

import { REQUEST_DEADLINE_MS, type BenchContext, type Row, type Scenario } from '../context.ts'
import { sttOf } from '../deployment.ts'
import { repoRoot } from '../infra.ts'
import { formatNumber, formatSigned, formatSummary, percentile, summarize } from '../stats.ts'

/** 2.5 s of 16 kHz PCM16 WAV (80 kB): the file both sides upload. */
const FIXTURE = 'tooling/fixtures/audio/tone.wav'
const WARM_UP_PAIRS = 10

interface Upload {
  url: URL
  token: string
  body: Buffer
  contentType: string
}

/** The multipart form the `openai` client sends, encoded once by the platform's own FormData. */
async function upload(url: string, token: string, model: string, audio: Buffer): Promise<Upload> {
  const form = new FormData()
  form.set('file', new Blob([audio], { type: 'audio/wav' }), 'tone.wav')
  form.set('model', model)
  form.set('response_format', 'json')
  const encoded = new Request(url, { method: 'POST', body: form })
  return { url: new URL(url), token, body: Buffer.from(await encoded.arrayBuffer()), contentType: encoded.headers.get('content-type')! }
}

/** Whether a `json` answer holds a transcript: a call that failed must not be timed as one that worked. */
function hasTranscript(body: string): boolean {
  try {
    return typeof (JSON.parse(body) as { text?: unknown }).text === 'string'
  }
  catch {
    return false
  }
}

/** One POST of `call` on `agent` (a kept-alive connection), timed from the request's start to the end of the answer. */
function post(agent: Agent, call: Upload): Promise<number> {
  const headers = { 'content-type': call.contentType, 'content-length': call.body.length, 'authorization': `Bearer ${call.token}` }
  return new Promise<number>((resolve, reject) => {
    const started = performance.now()
    const req = request({ agent, host: call.url.hostname, port: call.url.port, path: call.url.pathname, method: 'POST', headers }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (text += chunk))
      res.once('end', () => {
        const elapsed = performance.now() - started
        if (res.statusCode === 200 && hasTranscript(text))
          resolve(elapsed)
        else
          reject(new Error(`POST ${call.url}: ${res.statusCode} ${text.slice(0, 300)}`))
      })
      res.once('error', reject)
    })
    req.once('error', reject)
    req.setTimeout(REQUEST_DEADLINE_MS, () => req.destroy(new Error(`POST ${call.url}: no answer within ${REQUEST_DEADLINE_MS} ms`)))
    req.end(call.body)
  })
}

const ms = (value: number) => `${formatSigned(value)} ms`

/**
 * A REST transcription through the server (auth, rate limit, the file's duration
 * read, the Flux hold and bill) against the same form posted straight to the fake
 * upstream, in pairs: one direct call, then one through the server.
 */
export const sttRest: Scenario = {
  name: 'stt-rest',
  quick: true,
  async run(context: BenchContext): Promise<Row[]> {
    const stt = sttOf(context.deployment)
    const pairs = context.quick ? 50 : 300
    const audio = await readFile(join(repoRoot(), FIXTURE))
    const user = context.deployment.users[0]!
    const direct = await upload(`${context.infra.fakes.sttUrl}/audio/transcriptions`, stt.key, stt.upstreamModel, audio)
    const ours = await upload(`${context.server.url}/api/v1/audio/transcriptions`, user.token, stt.model, audio)
    const agents = { direct: new Agent({ keepAlive: true, maxSockets: 1 }), ours: new Agent({ keepAlive: true, maxSockets: 1 }) }
    const rounds = { directP50: [] as number[], directP99: [] as number[], oursP50: [] as number[], oursP99: [] as number[], addedP50: [] as number[], addedP99: [] as number[] }
    try {
      for (let pair = 0; pair < WARM_UP_PAIRS; pair++) {
        await post(agents.direct, direct)
        await post(agents.ours, ours)
      }
      for (let round = 0; round < context.rounds; round++) {
        const base: number[] = []
        const mine: number[] = []
        for (let pair = 0; pair < pairs; pair++) {
          base.push(await post(agents.direct, direct))
          mine.push(await post(agents.ours, ours))
        }
        rounds.directP50.push(percentile(base, 50))
        rounds.directP99.push(percentile(base, 99))
        rounds.oursP50.push(percentile(mine, 50))
        rounds.oursP99.push(percentile(mine, 99))
        rounds.addedP50.push(percentile(mine, 50) - percentile(base, 50))
        rounds.addedP99.push(percentile(mine, 99) - percentile(base, 99))
        context.log(`stt-rest round ${round + 1}: direct p50 ${formatNumber(rounds.directP50.at(-1)!)} ms, ours ${formatNumber(rounds.oursP50.at(-1)!)} ms, added p99 ${ms(rounds.addedP99.at(-1)!)}`)
      }
    }
    finally {
      agents.direct.destroy()
      agents.ours.destroy()
    }
    const addedP50 = summarize(rounds.addedP50)
    const addedP99 = summarize(rounds.addedP99)
    return [
      {
        scenario: 'stt-rest',
        metric: `POST /audio/transcriptions (tone.wav, 80 kB), c=1 p50 (${pairs} pairs/round)`,
        baseline: `direct ${formatSummary(summarize(rounds.directP50), 'ms')}`,
        ours: formatSummary(summarize(rounds.oursP50), 'ms'),
        ratio: ms(addedP50.median),
        target: '—',
        met: null,
        data: { directP50: summarize(rounds.directP50), oursP50: summarize(rounds.oursP50), addedP50 },
      },
      {
        scenario: 'stt-rest',
        metric: 'c=1 p99',
        baseline: `direct ${formatSummary(summarize(rounds.directP99), 'ms')}`,
        ours: formatSummary(summarize(rounds.oursP99), 'ms'),
        ratio: ms(addedP99.median),
        target: '—',
        met: null,
        data: { directP99: summarize(rounds.directP99), oursP99: summarize(rounds.oursP99), addedP99 },
      },
    ]
  },
}
