import { ref } from 'vue'

import { client } from './client.ts'

/** The signed-in user's Flux, shown in the header and on the Flux screen; null until first read. */
export const balance = ref<number | null>(null)

/** Reads the balance again (after a reply is billed, a top-up lands, or on demand). */
export async function refreshBalance(): Promise<number> {
  const { flux } = await client.flux.balance.query()
  balance.value = flux
  return flux
}

/**
 * Follows the balance events of the live feed (`chats.onMessages`): a top-up,
 * refund or grant made anywhere shows here at once. For screens without their
 * own subscription; the chat screen handles these events on its own. Returns
 * how to stop.
 */
export function followBalance(onChange?: (flux: number) => void): () => void {
  const subscription = client.chats.onMessages.subscribe(undefined, {
    onData: ({ data }) => {
      if (data.type !== 'balance')
        return
      balance.value = data.balance
      onChange?.(data.balance)
    },
    // Only a convenience here: the balance is still read on demand.
    onError: () => undefined,
  })
  return () => subscription.unsubscribe()
}
