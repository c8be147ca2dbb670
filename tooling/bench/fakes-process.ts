// The fake upstreams for `pnpm bench`, in a process of their own. Reports their
// URLs over IPC and runs until its parent stops it.
import { startFakeOpenAIUpstream } from '../fakes/openai-upstream.ts'
import { startFakeStreamingTtsUpstream } from '../fakes/streaming-tts-upstream.ts'

const [openai, tts] = await Promise.all([startFakeOpenAIUpstream({ name: 'bench' }), startFakeStreamingTtsUpstream()])
// The fakes keep every request for tests to read; under load nobody reads them.
setInterval(() => {
  openai.reset()
  tts.reset()
}, 1000)
process.send!({ openaiUrl: openai.url, ttsUrl: tts.url })
process.on('SIGTERM', () => {
  void Promise.all([openai.close(), tts.close()]).finally(() => process.exit(0))
})
