// The fake upstreams for `pnpm bench`, in a process of their own. Reports their
// URLs over IPC and runs until its parent stops it.
import { startFakeOpenAIUpstream } from '../fakes/openai-upstream.ts'
import { startFakeRealtimeSttUpstream } from '../fakes/realtime-stt-upstream.ts'
import { startFakeStreamingTtsUpstream } from '../fakes/streaming-tts-upstream.ts'
import { startFakeSttUpstream } from '../fakes/stt-upstream.ts'

// The stt-stream scenario sends utterances of exactly this length, so the fake's
// simulated voice-activity detection closes each one on its last frame.
const REALTIME_STT_UTTERANCE_MS = 200

const [openai, tts, stt, realtimeStt] = await Promise.all([
  startFakeOpenAIUpstream({ name: 'bench' }),
  startFakeStreamingTtsUpstream(),
  startFakeSttUpstream(),
  startFakeRealtimeSttUpstream({ utteranceMs: REALTIME_STT_UTTERANCE_MS }),
])
const fakes = [openai, tts, stt, realtimeStt]
// The fakes keep every request for tests to read; under load nobody reads them.
setInterval(() => {
  for (const fake of fakes)
    fake.reset()
}, 1000)
process.send!({ openaiUrl: openai.url, ttsUrl: tts.url, sttUrl: stt.url, realtimeSttUrl: realtimeStt.url, realtimeSttUtteranceMs: REALTIME_STT_UTTERANCE_MS })
process.on('SIGTERM', () => {
  void Promise.all(fakes.map(fake => fake.close())).finally(() => process.exit(0))
})
