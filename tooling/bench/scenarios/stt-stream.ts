import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'

import WebSocket from 'ws'

import { utteranceTranscript } from '../../fakes/realtime-stt-upstream.ts'
import { REQUEST_DEADLINE_MS, type BenchContext, type Row, type Scenario } from '../context.ts'
import { sttOf, trpcCall } from '../deployment.ts'
import { formatNumber, formatSigned, formatSummary, percentile, summarize } from '../stats.ts'
import { opened } from '../subscribers.ts'

/** The web client's microphone sends a frame about every 40 ms; the bench streams at that pace. */
const FRAME_MS = 40
/** The Realtime protocol's rate: our socket forwards audio at it untouched, so the fake counts exactly what was sent. */
const SAMPLE_RATE = 24_000
const SOCKET_PATH = '/api/v1/audio/transcriptions/ws'
const WARM_UP_UTTERANCES = 3

type Event = Record<string, unknown>

/** A socket whose JSON events are awaited one at a time; an error event, a close or the deadline fails the wait. */
interface Channel {
  /** The arrival time and the event of the next message `match` accepts. */
  next: (match: (event: Event) => boolean, what: string) => Promise<{ at: number, event: Event }>
  send: (data: string | Buffer) => void
  close: () => void
}

async function openChannel(url: string, headers: Record<string, string>, isError: (event: Event) => boolean): Promise<Channel> {
  const ws = new WebSocket(url, { headers })
  let waiter: { match: (event: Event) => boolean, resolve: (value: { at: number, event: Event }) => void, reject: (error: Error) => void } | undefined
  let broken: Error | undefined
  const fail = (error: Error) => {
    broken ??= error
    waiter?.reject(broken)
    waiter = undefined
  }
  ws.on('message', (data, isBinary) => {
    // Taken first: parsing is not part of the delivery.
    const at = performance.now()
    if (isBinary)
      return
    let event: Event
    try {
      event = JSON.parse(String(data)) as Event
    }
    catch {
      return fail(new Error(`${url.split('?')[0]} sent what is not JSON: ${String(data).slice(0, 300)}`))
    }
    if (isError(event))
      return fail(new Error(`${url.split('?')[0]}: ${JSON.stringify(event)}`))
    if (waiter?.match(event)) {
      waiter.resolve({ at, event })
      waiter = undefined
    }
  })
  ws.on('error', fail)
  ws.on('close', code => fail(new Error(`${url.split('?')[0]} closed (${code})`)))
  await opened(ws)
  return {
    next(match, what) {
      if (broken)
        return Promise.reject(broken)
      let timer: NodeJS.Timeout | undefined
      return new Promise<{ at: number, event: Event }>((resolve, reject) => {
        waiter = { match, resolve, reject }
        timer = setTimeout(() => fail(new Error(`no ${what} within ${REQUEST_DEADLINE_MS} ms`)), REQUEST_DEADLINE_MS)
      }).finally(() => clearTimeout(timer))
    },
    send: data => ws.send(data),
    close: () => ws.terminate(),
  }
}

/** One side's session: how audio goes out, which event is an utterance's final transcript, how it ends. */
interface Speaker {
  channel: Channel
  sendAudio: (pcm: Buffer) => void
  /** The transcript of a final-transcript event, or undefined for any other event. */
  finalText: (event: Event) => string | undefined
  end: () => Promise<void>
}

/** Straight to the fake, speaking the Realtime transcription protocol as our server's adapter does. */
async function directSpeaker(url: string, key: string): Promise<Speaker> {
  const channel = await openChannel(url, { authorization: `Bearer ${key}` }, event => event.type === 'error')
  const updated = channel.next(event => event.type === 'session.updated', 'session.updated')
  channel.send(JSON.stringify({
    type: 'session.update',
    session: { type: 'transcription', audio: { input: { format: { type: 'audio/pcm', rate: SAMPLE_RATE }, transcription: { model: 'gpt-4o-transcribe' }, turn_detection: { type: 'server_vad' } } } },
  }))
  await updated
  return {
    channel,
    sendAudio: pcm => channel.send(JSON.stringify({ type: 'input_audio_buffer.append', audio: pcm.toString('base64') })),
    finalText: event => event.type === 'conversation.item.input_audio_transcription.completed' ? String(event.transcript) : undefined,
    end: async () => channel.close(),
  }
}

/** Through our socket, with a ticket of `token`'s user; ends with stop and waits for the session to finish. */
async function serverSpeaker(baseUrl: string, token: string): Promise<Speaker> {
  const { ticket } = await trpcCall<{ ticket: string }>(baseUrl, token, 'audio.createTranscriptionTicket', undefined, 'mutation')
  const channel = await openChannel(`${baseUrl.replace(/^http/, 'ws')}${SOCKET_PATH}?ticket=${encodeURIComponent(ticket)}`, {}, event => event.event === 'error')
  const started = channel.next(event => event.event === 'session.started', 'session.started')
  channel.send(JSON.stringify({ event: 'start', sample_rate: SAMPLE_RATE }))
  await started
  return {
    channel,
    sendAudio: pcm => channel.send(pcm),
    finalText: event => event.event === 'transcript.final' ? String(event.text) : undefined,
    async end() {
      const finished = channel.next(event => event.event === 'session.finished', 'session.finished')
      channel.send(JSON.stringify({ event: 'stop' }))
      await finished.finally(() => channel.close())
    },
  }
}

/** One utterance of `ms` of a quiet 220 Hz tone, PCM16LE at 24 kHz, cut into the microphone's frames. */
function utteranceFrames(ms: number): Buffer[] {
  const samples = Math.round((ms * SAMPLE_RATE) / 1000)
  const pcm = Buffer.alloc(samples * 2)
  for (let n = 0; n < samples; n++)
    pcm.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * 220 * n) / SAMPLE_RATE)), n * 2)
  const frameBytes = (FRAME_MS * SAMPLE_RATE / 1000) * 2
  const frames: Buffer[] = []
  for (let offset = 0; offset < pcm.length; offset += frameBytes)
    frames.push(pcm.subarray(offset, offset + frameBytes))
  return frames
}

/**
 * Streams `count` utterances at the microphone's pace and times each from its last
 * frame to its final transcript. The utterance is exactly as long as the fake's
 * simulated voice-activity detection waits for, so its last frame is what closes it;
 * a transcript naming another index or length means the boundary slipped.
 */
async function speak(speaker: Speaker, frames: Buffer[], utteranceMs: number, count: number): Promise<number[]> {
  const latencies: number[] = []
  for (let index = 1; index <= count; index++) {
    for (const frame of frames.slice(0, -1)) {
      speaker.sendAudio(frame)
      await sleep(FRAME_MS)
    }
    const final = speaker.channel.next(event => speaker.finalText(event) !== undefined, `the final transcript of utterance ${index}`)
    const sent = performance.now()
    speaker.sendAudio(frames.at(-1)!)
    const { at, event } = await final
    const expected = utteranceTranscript(index, utteranceMs)
    if (speaker.finalText(event) !== expected)
      throw new Error(`utterance ${index}: expected the transcript ${JSON.stringify(expected)}, got ${JSON.stringify(speaker.finalText(event))}`)
    latencies.push(at - sent)
  }
  return latencies
}

async function session(open: Promise<Speaker>, frames: Buffer[], utteranceMs: number, count: number): Promise<number[]> {
  const speaker = await open
  let latencies: number[]
  try {
    latencies = await speak(speaker, frames, utteranceMs, count)
  }
  catch (error) {
    // Ending a broken session would only hide why it broke.
    speaker.channel.close()
    throw error
  }
  await speaker.end()
  return latencies
}

const ms = (value: number) => `${formatSigned(value)} ms`

/**
 * Time from an utterance's last audio frame to its `transcript.final` through our
 * transcription socket, against the same audio streamed straight to the fake
 * Realtime upstream; sessions are paired (one direct, one ours, …).
 */
export const sttStream: Scenario = {
  name: 'stt-stream',
  quick: true,
  async run(context: BenchContext): Promise<Row[]> {
    const stt = sttOf(context.deployment)
    const { realtimeSttUrl, realtimeSttUtteranceMs: utteranceMs } = context.infra.fakes
    const sessions = context.quick ? 2 : 4
    const utterances = context.quick ? 5 : 10
    const frames = utteranceFrames(utteranceMs)
    const users = context.deployment.users
    let turn = 0
    // Tickets are limited per user (30 a minute): every session of ours is another user's.
    const ours = (count: number) => session(serverSpeaker(context.server.url, users[turn++ % users.length]!.token), frames, utteranceMs, count)
    const direct = (count: number) => session(directSpeaker(realtimeSttUrl, stt.streamingKey), frames, utteranceMs, count)
    await direct(WARM_UP_UTTERANCES)
    await ours(WARM_UP_UTTERANCES)
    const rounds = { directP50: [] as number[], directP99: [] as number[], oursP50: [] as number[], oursP99: [] as number[], addedP50: [] as number[], addedP99: [] as number[] }
    for (let round = 0; round < context.rounds; round++) {
      const base: number[] = []
      const mine: number[] = []
      for (let index = 0; index < sessions; index++) {
        base.push(...await direct(utterances))
        mine.push(...await ours(utterances))
      }
      rounds.directP50.push(percentile(base, 50))
      rounds.directP99.push(percentile(base, 99))
      rounds.oursP50.push(percentile(mine, 50))
      rounds.oursP99.push(percentile(mine, 99))
      rounds.addedP50.push(percentile(mine, 50) - percentile(base, 50))
      rounds.addedP99.push(percentile(mine, 99) - percentile(base, 99))
      context.log(`stt-stream round ${round + 1}: direct p50 ${formatNumber(rounds.directP50.at(-1)!)} ms, ours ${formatNumber(rounds.oursP50.at(-1)!)} ms, added p99 ${ms(rounds.addedP99.at(-1)!)}`)
    }
    const addedP50 = summarize(rounds.addedP50)
    const addedP99 = summarize(rounds.addedP99)
    const perRound = sessions * utterances
    return [
      {
        scenario: 'stt-stream',
        metric: `last frame of an utterance → transcript.final, p50 (${perRound} utterances of ${utteranceMs} ms/round)`,
        baseline: `direct ${formatSummary(summarize(rounds.directP50), 'ms')}`,
        ours: formatSummary(summarize(rounds.oursP50), 'ms'),
        ratio: ms(addedP50.median),
        target: 'added ≤ 5 ms',
        met: addedP50.median <= 5,
        data: { directP50: summarize(rounds.directP50), oursP50: summarize(rounds.oursP50), addedP50 },
      },
      {
        scenario: 'stt-stream',
        metric: 'p99',
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
