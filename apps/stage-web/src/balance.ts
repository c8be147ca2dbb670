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
