// The chats domain: chats, members and messages (service), their live sync feed, and the
// cross-instance notices of chat sends (fanout) and balance changes (balance-fanout).
export { createChatService, DEFAULT_CHAT_SUBSCRIPTIONS_PER_USER, type ChatService } from './service.ts'
export { createChatFanout, type ChatFanout } from './fanout.ts'
export { createBalanceFanout, type BalanceFanout } from './balance-fanout.ts'
