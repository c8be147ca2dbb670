// The seam for speaking replies. The SDK's createSpeechStream (streaming TTS over one
// WebSocket per reply) is being built; once it lands, startReplyVoice opens one here and the
// chat screen already feeds it the reply's text as it streams and stops it on demand.

export interface ReplyVoice {
  appendText: (text: string) => void
  finish: () => void
  cancel: () => void
}

/** A voice for one reply, or null while speech is not available. */
export function startReplyVoice(_options: { model?: string, voice?: string }): ReplyVoice | null {
  return null
}
