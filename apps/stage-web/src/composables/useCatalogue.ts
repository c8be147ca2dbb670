import type { ChatModel } from '@airi/sdk'

import { client } from '../client.ts'

// What the operator has set up, asked once per page: screens offer only those parts
// (a voice picker only with voices), and never call a route just to learn it answers 503.

type Features = Awaited<ReturnType<typeof client.meta.features.query>>
let features: Promise<Features> | undefined

/** `meta.features`: which services are set up (cached; a failure is asked again next time). */
export function loadFeatures(): Promise<Features> {
  features ??= client.meta.features.query().catch((error: unknown) => {
    features = undefined
    throw error
  })
  return features
}

/** The chat models with their prices; none when no language model is set up. */
export async function loadChatModels(): Promise<ChatModel[]> {
  return (await loadFeatures()).chat ? await client.rest.models() : []
}
