import { ref } from 'vue'

import { client } from './client.ts'
import { useFeed } from './composables/useFeed.ts'

/** The signed-in user's Flux, shown in the header and on the Flux screen; null until first read. */
export const balance = ref<number | null>(null)

/** Reads the balance again (after a reply is billed, a top-up lands, or on demand). */
export async function refreshBalance(): Promise<number> {
  const { flux } = await client.flux.balance.query()
  balance.value = flux
  return flux
}

/** Keeps `balance` live: a top-up, refund or grant made anywhere arrives as a `balance` event, and a reconnect re-reads it. */
export function followBalanceEvents(): void {
  const { onFeed, onReady } = useFeed()
  onFeed((event) => {
    if (event.type === 'balance')
      balance.value = event.balance
  })
  onReady(() => void refreshBalance().catch(() => undefined))
}
