/** The upstream's answer to a commit with nothing left in its buffer: nothing to flush, not a failure. */
const COMMIT_EMPTY = 'input_audio_buffer_commit_empty'

/**
 * Which utterances the upstream still owes a transcript, and when the session
 * is done: after `commit`, once the commit was answered (its own `committed`
 * item, or `input_audio_buffer_commit_empty`) and every committed item has
 * completed. A `committed` preceded by `speech_stopped` for its item is the
 * upstream's voice-activity detection, not the answer to our commit.
 */
export function createItemLedger() {
  const pending = new Set<string>()
  const completed = new Set<string>()
  const detected = new Set<string>()
  let committing = false
  let commitAnswered = false
  return {
    commitSent(): void {
      committing = true
    },
    speechStopped(itemId: string | undefined): void {
      if (itemId)
        detected.add(itemId)
    },
    committed(itemId: string | undefined): void {
      const byDetection = itemId !== undefined && detected.delete(itemId)
      if (itemId && !completed.has(itemId))
        pending.add(itemId)
      if (!byDetection && committing)
        commitAnswered = true
    },
    completed(itemId: string | undefined): void {
      if (!itemId)
        return
      pending.delete(itemId)
      completed.add(itemId)
    },
    /** True for the commit's own "nothing to commit". */
    commitWasEmpty(code: string | null | undefined): boolean {
      if (code !== COMMIT_EMPTY || !committing)
        return false
      commitAnswered = true
      return true
    },
    get done(): boolean {
      return committing && commitAnswered && pending.size === 0
    },
  }
}

export type ItemLedger = ReturnType<typeof createItemLedger>
