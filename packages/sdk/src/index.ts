export { createAiriClient, type AiriClient, type AiriClientOptions, type TokenGetter, type WebSocketConstructor } from './client.ts'
export type {
  ChatCompletion,
  ChatCompletionMessage,
  ChatCompletionOptions,
  ChatCompletionRequest,
  ChatContentPart,
  CompletionUsage,
  FinishReason,
  StreamChatCompletionOptions,
  StreamChatCompletionRequest,
  StreamedCompletion,
} from './completions.ts'
export { AiriError, toAiriError } from './errors.ts'
export type { ChatModel, Download, ModelPrice, RestApi, SpeechModels, SpeechRequest, Voice } from './rest.ts'
export {
  buildAuthorizeUrl,
  createPkcePair,
  createState,
  DEFAULT_OIDC_SCOPE,
  endBrowserSession,
  exchangeCode,
  OidcError,
  oidcEndpoints,
  parseCallback,
  refreshTokens,
  revokeToken,
  type AuthorizeUrlOptions,
  type EndBrowserSessionOptions,
  type ExchangeCodeOptions,
  type OidcEndpoints,
  type OidcTokens,
  type PkcePair,
  type RefreshTokensOptions,
  type RevokeTokenOptions,
} from './oidc.ts'
export {
  createReplyFollower,
  followReply,
  type ChatEvent,
  type ChatMessage,
  type FollowReplyOptions,
  type ReplyEndEvent,
  type ReplyEvent,
  type ReplyFollower,
  type ReplyFollowerOptions,
  type ReplyState,
} from './replies.ts'
export {
  createSpeechStream,
  createTtsSession,
  SpeechStreamError,
  type SpeechCallbacks,
  type SpeechStream,
  type SpeechStreamOptions,
  type SpeechUsage,
  type TtsProvider,
  type TtsSessionOptions,
} from './speech.ts'
export {
  createTranscriptionStream,
  MAX_AUDIO_FRAME_BYTES,
  transcribe,
  TranscriptionStreamError,
  type TranscribeOptions,
  type TranscriptEvent,
  type TranscriptionCallbacks,
  type TranscriptionResponseFormat,
  type TranscriptionStream,
  type TranscriptionStreamOptions,
  type TranscriptionUsage,
  type VerboseTranscription,
} from './transcription.ts'
// Every failed call rejects with this; `error.data` carries `code`, `httpStatus`,
// the domain `apiCode`, `details` and, for bad input, `fieldErrors`.
export { TRPCClientError } from '@trpc/client'
