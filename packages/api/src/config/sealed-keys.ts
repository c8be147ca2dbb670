import { KeyDecryptError, type KeyVault } from '../services/key-vault.ts'
import type { ConfigKey, ConfigValue } from './entries.ts'

/** The alias the streaming TTS bridge's keys are sealed under (SPEC §4.6). */
export const STREAMING_TTS_KEY_ALIAS = 'streaming-tts'
/** The alias the streaming transcription upstream's keys are sealed under (SPEC §4.13). */
export const STREAMING_STT_KEY_ALIAS = 'streaming-stt'

/** One field of a config value that is refused, in the shape `INVALID_CONFIG_VALUE` reports zod's issues. */
export interface ConfigIssue {
  path: Array<string | number>
  message: string
}

/** A sealed upstream key inside a config value: where its ciphertext sits and the AAD it must decrypt under. */
interface SealedKeyField {
  path: Array<string | number>
  alias: string
  keyId: string
  ciphertext: string
}

type SealedKeyReaders = { [K in ConfigKey]?: (value: ConfigValue<K>) => SealedKeyField[] }

const keysAt = (prefix: Array<string | number>, alias: string, keys: ReadonlyArray<{ id: string, ciphertext: string }>): SealedKeyField[] =>
  keys.map((key, index) => ({ path: [...prefix, 'keys', index, 'ciphertext'], alias, keyId: key.id, ciphertext: key.ciphertext }))

/** Per entry, the sealed keys it holds and the alias each is sealed under, as the service that uses it decrypts them. */
const sealedKeyReaders: SealedKeyReaders = {
  LLM_ROUTER_CONFIG: value => Object.entries(value.models).flatMap(([alias, model]) =>
    model.upstreams.flatMap((upstream, index) => keysAt(['models', alias, 'upstreams', index], alias, upstream.keys))),
  TTS_UPSTREAMS: value => Object.entries(value.models).flatMap(([alias, model]) => keysAt(['models', alias], alias, model.keys)),
  STT_UPSTREAMS: value => Object.entries(value.models).flatMap(([alias, model]) => keysAt(['models', alias], alias, model.keys)),
  STREAMING_TTS_UPSTREAM: value => keysAt([], STREAMING_TTS_KEY_ALIAS, value.keys),
  STREAMING_STT_UPSTREAM: value => keysAt([], STREAMING_STT_KEY_ALIAS, value.keys),
}

/** Every sealed key of an entry's parsed value; none for an entry that holds no keys. */
function sealedKeysOf<K extends ConfigKey>(key: K, value: ConfigValue<K>): SealedKeyField[] {
  const read = sealedKeyReaders[key] as ((value: ConfigValue<K>) => SealedKeyField[]) | undefined
  return read?.(value) ?? []
}

/**
 * The sealed keys of a parsed value that this server could not use: each must
 * decrypt under the master key for its alias and key id, so a raw key pasted as a
 * ciphertext is refused when it is set, not at call time. The plaintext is dropped.
 */
export function sealedKeyIssues<K extends ConfigKey>(key: K, value: ConfigValue<K>, keyVault: KeyVault | undefined): ConfigIssue[] {
  return sealedKeysOf(key, value).flatMap(({ path, alias, keyId, ciphertext }) => {
    const how = `seal the key for this alias and key id (pnpm airi key seal ${alias} --key-id ${keyId}, or admin.llm.encryptKey with { model: ${JSON.stringify(alias)}, keyId: ${JSON.stringify(keyId)} })`
    if (!keyVault)
      return [{ path, message: `LLM_ROUTER_MASTER_KEY is not set on this server, so no sealed key can be checked or used: set it, then ${how}` }]
    try {
      keyVault.decrypt(alias, keyId, ciphertext)
      return []
    }
    catch (error) {
      if (!(error instanceof KeyDecryptError))
        throw error
      const why = error.reason === 'malformed' ? 'is not a sealed key (a raw API key?)' : 'does not decrypt under this server\'s master key for this alias and key id'
      return [{ path, message: `The ciphertext ${why}: ${how}` }]
    }
  })
}
