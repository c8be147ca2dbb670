import type { client } from './client.ts'

/** One metered call as `usage.calls` (and an admin's user lookup) lists it. */
export type UsageCall = Awaited<ReturnType<typeof client.usage.calls.query>>['items'][number]

/** How the Usage screen and the admin pages name a call's time and kind, so an operator and the person read it alike. */
export const CALL_TIME = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' })
export const CALL_KIND_LABELS: Record<string, string> = { 'llm': 'Chat API', 'reply': 'Reply', 'tts': 'Speech', 'tts-stream': 'Speech (live)', 'stt': 'Transcription', 'stt-stream': 'Transcription (live)' }

/** What a call used, in the unit of its kind. */
export function callUnits(call: UsageCall): string {
  if (call.characters !== undefined)
    return `${call.characters.toLocaleString('en')} characters`
  if (call.seconds !== undefined)
    return `${call.seconds.toLocaleString('en', { maximumFractionDigits: 1 })} s of audio`
  if (call.inputTokens !== undefined || call.outputTokens !== undefined)
    return `${(call.inputTokens ?? 0).toLocaleString('en')} in / ${(call.outputTokens ?? 0).toLocaleString('en')} out tokens`
  return '—'
}
