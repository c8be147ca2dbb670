import { ApiError, type Api, type Logger } from '@airi/api'

import type { Env } from './env.ts'

/** The LLM alias the quick start configures, and makes the router's default. */
const QUICK_START_CHAT_ALIAS = 'chat'
/** The speech alias the quick start configures, and makes the speech default. */
const QUICK_START_VOICE_ALIAS = 'voice'
const KEY_ID = 'openai'

// OpenAI has no voice list endpoint, so its built-in voices are stored with the entry.
const OPENAI_VOICES = ['alloy', 'ash', 'coral', 'echo', 'fable', 'nova', 'onyx', 'sage', 'shimmer'].map(id => ({ id }))

type QuickStartEnv = Pick<Env, 'OPENAI_API_KEY' | 'OPENAI_BASE_URL' | 'OPENAI_MODEL' | 'OPENAI_TTS_MODEL'>

/** The base URL as it may be logged: without credentials, query or trailing slash. */
function printable(baseUrl: string): string {
  const url = new URL(baseUrl)
  return `${url.origin}${url.pathname}`.replace(/\/$/, '')
}

/**
 * `OPENAI_API_KEY=… pnpm start` (SPEC §4.15): when the operator has stored no
 * LLM_ROUTER_CONFIG (or, with OPENAI_TTS_MODEL, no TTS_UPSTREAMS), stores one built
 * from the OPENAI_* variables, the key sealed by the server's vault. An entry the
 * operator stored is never touched.
 */
export async function applyQuickStart(services: Pick<Api['services'], 'config' | 'llmGateway'>, env: QuickStartEnv, logger: Logger): Promise<void> {
  const apiKey = env.OPENAI_API_KEY
  if (!apiKey)
    return
  const baseUrl = env.OPENAI_BASE_URL.replace(/\/+$/, '')
  const shown = printable(baseUrl)
  const seal = (alias: string) => {
    const { keyId, ciphertext } = services.llmGateway.encryptKey(alias, KEY_ID, apiKey)
    return [{ id: keyId, ciphertext }]
  }

  try {
    if ((await services.config.describe('LLM_ROUTER_CONFIG')).isSet) {
      logger.info({ key: 'LLM_ROUTER_CONFIG' }, 'OPENAI_API_KEY is ignored: LLM_ROUTER_CONFIG is already stored')
    }
    else {
      await services.config.set('LLM_ROUTER_CONFIG', {
        defaultModel: QUICK_START_CHAT_ALIAS,
        models: { [QUICK_START_CHAT_ALIAS]: { upstreams: [{ id: KEY_ID, baseUrl, model: env.OPENAI_MODEL, keys: seal(QUICK_START_CHAT_ALIAS) }] } },
      })
      logger.info({ alias: QUICK_START_CHAT_ALIAS, model: env.OPENAI_MODEL, baseUrl: shown }, `configured the model alias ${QUICK_START_CHAT_ALIAS} from OPENAI_API_KEY (${env.OPENAI_MODEL} at ${shown})`)
    }

    if (!env.OPENAI_TTS_MODEL)
      return
    if ((await services.config.describe('TTS_UPSTREAMS')).isSet) {
      logger.info({ key: 'TTS_UPSTREAMS' }, 'OPENAI_API_KEY is ignored for speech: TTS_UPSTREAMS is already stored')
      return
    }
    await services.config.set('TTS_UPSTREAMS', {
      defaultModel: QUICK_START_VOICE_ALIAS,
      models: {
        [QUICK_START_VOICE_ALIAS]: {
          adapter: 'openai-compatible',
          baseUrl,
          model: env.OPENAI_TTS_MODEL,
          ...(new URL(baseUrl).hostname === 'api.openai.com' ? { voices: OPENAI_VOICES } : {}),
          keys: seal(QUICK_START_VOICE_ALIAS),
        },
      },
    })
    logger.info({ alias: QUICK_START_VOICE_ALIAS, model: env.OPENAI_TTS_MODEL, baseUrl: shown }, `configured the speech alias ${QUICK_START_VOICE_ALIAS} from OPENAI_API_KEY (${env.OPENAI_TTS_MODEL} at ${shown})`)
  }
  catch (error) {
    // Without a vault the key could only be stored in the clear, which we never do.
    if (error instanceof ApiError && error.code === 'CONFIG_NOT_SET') {
      logger.warn({ key: 'LLM_ROUTER_MASTER_KEY' }, 'OPENAI_API_KEY is ignored: LLM_ROUTER_MASTER_KEY is not set, so the key cannot be stored encrypted')
      return
    }
    throw error
  }
}
