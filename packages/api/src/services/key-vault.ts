import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'

const VERSION = 'v1'
const KEY_BYTES = 32
const IV_BYTES = 12
const TAG_BYTES = 16

/** An upstream key could not be decrypted; says which one, never what it holds. */
export class KeyDecryptError extends Error {
  override readonly name = 'KeyDecryptError'

  constructor(
    readonly model: string,
    readonly keyId: string,
    readonly reason: 'malformed' | 'unauthentic',
  ) {
    super(reason === 'malformed'
      ? `Cannot decrypt key "${keyId}" of model "${model}": the ciphertext is malformed`
      : `Cannot decrypt key "${keyId}" of model "${model}": wrong master key, model or key id, or a tampered ciphertext`)
  }
}

export interface KeyVault {
  /** `v1.<iv>.<ciphertext>.<tag>` (base64url), bound to `model` and `keyId`. */
  encrypt: (model: string, keyId: string, apiKey: string) => string
  /** Throws `KeyDecryptError` unless `ciphertext` was made by `encrypt` with the same master key, model and key id. */
  decrypt: (model: string, keyId: string, ciphertext: string) => string
}

/**
 * Reads `LLM_ROUTER_MASTER_KEY`: 32 bytes as 64 hex characters or as base64 /
 * base64url (44 or 43 characters). The error never repeats the value: it is a secret.
 */
export function parseMasterKey(value: string): Buffer {
  const text = value.trim()
  let key: Buffer | undefined
  if (/^[0-9a-f]{64}$/i.test(text))
    key = Buffer.from(text, 'hex')
  else if (/^[\w+/-]{43}=?$/.test(text) && !(/[+/]/.test(text) && /[-_]/.test(text)))
    key = Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64')
  if (key?.length !== KEY_BYTES)
    throw new Error(`LLM_ROUTER_MASTER_KEY must be ${KEY_BYTES} bytes written as 64 hex characters or as base64/base64url (44 or 43 characters), e.g. from \`openssl rand -hex 32\`; got a value of ${text.length} characters that is neither`)
  return key
}

/**
 * Envelope encryption of upstream API keys (SPEC §4.5): AES-256-GCM under the
 * master key, with model and key id as additional data so a ciphertext cannot be
 * moved to another model or key entry.
 */
export function createKeyVault(masterKey: Buffer): KeyVault {
  if (masterKey.length !== KEY_BYTES)
    throw new Error(`The master key must be ${KEY_BYTES} bytes, got ${masterKey.length}`)
  // A copy, so a caller zeroing or reusing its buffer cannot change the vault's key.
  const key = Buffer.from(masterKey)

  return {
    encrypt(model, keyId, apiKey) {
      const iv = randomBytes(IV_BYTES)
      const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES })
      cipher.setAAD(additionalData(model, keyId))
      const ciphertext = Buffer.concat([cipher.update(apiKey, 'utf8'), cipher.final()])
      return [VERSION, ...[iv, ciphertext, cipher.getAuthTag()].map(part => part.toString('base64url'))].join('.')
    },
    decrypt(model, keyId, ciphertext) {
      const parts = ciphertext.split('.')
      const [iv, data, tag] = parts.slice(1).map(decodeBase64url)
      if (parts.length !== 4 || parts[0] !== VERSION || iv?.length !== IV_BYTES || !data || tag?.length !== TAG_BYTES || model.includes('\u0000') || keyId.includes('\u0000'))
        throw new KeyDecryptError(model, keyId, 'malformed')
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES })
        decipher.setAAD(additionalData(model, keyId))
        decipher.setAuthTag(tag)
        return Buffer.concat([decipher.update(data), decipher.final()]).toString('utf8')
      }
      catch {
        throw new KeyDecryptError(model, keyId, 'unauthentic')
      }
    },
  }
}

/** NUL cannot be part of a model alias or key id, so `a\0b` names exactly one pair. */
function additionalData(model: string, keyId: string): Buffer {
  if (model.includes('\u0000') || keyId.includes('\u0000'))
    throw new Error('A model or key id cannot contain a NUL character')
  return Buffer.from(`${model}\u0000${keyId}`, 'utf8')
}

/** Strict base64url: Node's decoder skips stray characters, which would hide tampering. */
function decodeBase64url(part: string): Buffer | undefined {
  if (!/^[\w-]*$/.test(part))
    return undefined
  const bytes = Buffer.from(part, 'base64url')
  return bytes.toString('base64url') === part ? bytes : undefined
}
