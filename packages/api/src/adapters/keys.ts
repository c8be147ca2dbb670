/**
 * Every Redis key and pub/sub channel name is built here (SPEC §3), so the
 * namespace can be read in one place. Adapters add the deployment's prefix.
 */
export const keys = {
  userFlux: (userId: string) => `user:${userId}:flux`,
  config: (key: string) => `config:${key}`,
  fluxMeterDebt: (userId: string, meter: string) => `user:${userId}:flux-meter:${meter}:debt`,
  /** Units that calls under way have set aside, not yet billed (see services/billing/holds.ts). */
  fluxMeterHeld: (userId: string, meter: string) => `user:${userId}:flux-meter:${meter}:held`,
  /** A personal API key's own meter debt: the whole Flux it settles are that key's (see services/billing/meter.ts). */
  fluxMeterKeyDebt: (userId: string, meter: string, keyId: string) => `user:${userId}:flux-meter:${meter}:key:${keyId}:debt`,
  /** Units a budgeted key's calls under way have set aside against its budget (see services/billing/holds.ts). */
  fluxMeterKeyHeld: (userId: string, meter: string, keyId: string) => `user:${userId}:flux-meter:${meter}:key:${keyId}:held`,
  rateLimit: (route: string, key: string) => `rate:${route}:${key}`,
  stripePrices: () => 'cache:stripe:prices',
  ttsVoices: (model: string) => `tts:voices:${model}`,
  /** A single-use ticket for the streaming speech socket (60 s). */
  speechTicket: (ticket: string) => `tts:ticket:${ticket}`,
  /** A single-use ticket for the streaming transcription socket (60 s). */
  transcriptionTicket: (ticket: string) => `stt:ticket:${ticket}`,
  /** The text so far of a reply being made, for `chats.getReply` on any instance (see services/chats/replies.ts). */
  chatReplyText: (replyId: string) => `chat:reply:${replyId}:text`,
} as const

export const channels = {
  /** One notice per chat send, for every instance (see services/chats/fanout.ts). */
  chatSync: () => 'chat:sync',
  configInvalidate: () => 'config:invalidate',
  /** A user's balance changed by a top-up, refund or grant (see services/chats/balance-fanout.ts). */
  balance: () => 'flux:balance',
  /** A session was deleted (sign-out, revocation, password reset) or a user was. */
  sessionRevoked: () => 'auth:session-revoked',
} as const
