// The chats domain: chats, members and messages (service), their live sync feed, and the
// cross-instance notices of chat sends (fanout) and balance changes (balance-fanout).
export { createChatService, DEFAULT_CHAT_SUBSCRIPTIONS_PER_USER, type ChatService } from './service.ts'
export { createChatFanout,  } from './fanout.ts'
export { createBalanceFanout,  } from './balance-fanout.ts'
