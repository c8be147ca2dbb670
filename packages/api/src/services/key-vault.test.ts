import { randomBytes } from 'node:crypto'

import { describe, expect, it } from 'vitest'

import { createKeyVault, KeyDecryptError, parseMasterKey } from './key-vault.ts'

const MODEL = 'gpt-fast'
const KEY_ID = 'primary'
const API_KEY = 'sk-test-0123456789abcdef'

const vault = createKeyVault(randomBytes(32))

/** Flips one bit of the base64url part at `index` (1 = iv, 2 = ciphertext, 3 = tag). */
function tamper(ciphertext: string, index: number): string {
  const parts = ciphertext.split('.')
  const bytes = Buffer.from(parts[index]!, 'base64url')
  bytes[0] = bytes[0]! ^ 1
  parts[index] = bytes.toString('base64url')
  return parts.join('.')
}

function decryptError(run: () => unknown): KeyDecryptError {
  try {
    run()
  }
  catch (error) {
    expect(error).toBeInstanceOf(KeyDecryptError)
    return error as KeyDecryptError
  }
  throw new Error('expected decrypt to throw')
}

describe('key vault', () => {
  it('decrypts what it encrypted', () => {
    const ciphertext = vault.encrypt(MODEL, KEY_ID, API_KEY)
    expect(ciphertext).toMatch(/^v1\.[\w-]{16}\.[\w-]+\.[\w-]{22}$/)
    expect(ciphertext).not.toContain(API_KEY)
    expect(vault.decrypt(MODEL, KEY_ID, ciphertext)).toBe(API_KEY)
  })

  it('round-trips non-ASCII and empty keys', () => {
    for (const apiKey of ['', 'ключ-🔑-鍵'])
      expect(vault.decrypt(MODEL, KEY_ID, vault.encrypt(MODEL, KEY_ID, apiKey))).toBe(apiKey)
  })

  it('uses a fresh IV for every encryption', () => {
    const first = vault.encrypt(MODEL, KEY_ID, API_KEY)
    const second = vault.encrypt(MODEL, KEY_ID, API_KEY)
    expect(first).not.toBe(second)
    expect(first.split('.')[1]).not.toBe(second.split('.')[1])
  })

  it('refuses a ciphertext moved to another model', () => {
    const error = decryptError(() => vault.decrypt('gpt-other', KEY_ID, vault.encrypt(MODEL, KEY_ID, API_KEY)))
    expect(error.message).toContain('gpt-other')
    expect(error.message).toContain(KEY_ID)
    expect(error.message).not.toContain(API_KEY)
  })

  it('refuses a ciphertext moved to another key id', () => {
    decryptError(() => vault.decrypt(MODEL, 'secondary', vault.encrypt(MODEL, KEY_ID, API_KEY)))
  })

  it('keeps model and key id apart in the additional data', () => {
    decryptError(() => vault.decrypt('gpt', 'fast-primary', vault.encrypt('gpt-fast', 'primary', API_KEY)))
    expect(() => vault.encrypt('gpt\u0000fast', KEY_ID, API_KEY)).toThrow(/NUL/)
    decryptError(() => vault.decrypt('gpt\u0000fast', KEY_ID, vault.encrypt(MODEL, KEY_ID, API_KEY)))
  })

  it('refuses a ciphertext made under another master key', () => {
    const other = createKeyVault(randomBytes(32))
    const error = decryptError(() => vault.decrypt(MODEL, KEY_ID, other.encrypt(MODEL, KEY_ID, API_KEY)))
    expect(error.reason).toBe('unauthentic')
  })

  it.each([[1, 'iv'], [2, 'ciphertext'], [3, 'tag']])('refuses a tampered %s (%s)', (index) => {
    const error = decryptError(() => vault.decrypt(MODEL, KEY_ID, tamper(vault.encrypt(MODEL, KEY_ID, API_KEY), index)))
    expect(error.reason).toBe('unauthentic')
  })

  it('refuses malformed ciphertexts', () => {
    const good = vault.encrypt(MODEL, KEY_ID, API_KEY)
    const [, iv, data, tag] = good.split('.')
    const malformed = [
      '',
      'garbage',
      'v1...',
      good.slice(0, -4),
      `${good}.extra`,
      `v2.${iv}.${data}.${tag}`,
      `v1.${iv}.${data}.${tag!.slice(0, 16)}`,
      `v1.${iv!.slice(0, 8)}.${data}.${tag}`,
      `v1.${iv}.${data}.${tag!.slice(0, -1)}!`,
      `v1.${iv}.${data}+/.${tag}`,
    ]
    for (const ciphertext of malformed) {
      const error = decryptError(() => vault.decrypt(MODEL, KEY_ID, ciphertext))
      expect(error.reason, ciphertext).toBe('malformed')
    }
  })

  it('needs a 32-byte master key', () => {
    expect(() => createKeyVault(randomBytes(16))).toThrow(/32 bytes/)
  })
})

describe('parseMasterKey', () => {
  const key = randomBytes(32)

  it.each([
    ['hex', key.toString('hex')],
    ['upper-case hex', key.toString('hex').toUpperCase()],
    ['base64', key.toString('base64')],
    ['base64url', key.toString('base64url')],
    ['padded base64url', `${key.toString('base64url')}=`],
    ['hex with a trailing newline', `${key.toString('hex')}\n`],
  ])('accepts %s', (_name, value) => {
    expect(parseMasterKey(value).equals(key)).toBe(true)
  })

  it.each([
    ['an empty value', ''],
    ['16 bytes of hex', randomBytes(16).toString('hex')],
    ['33 bytes of hex', randomBytes(33).toString('hex')],
    ['31 bytes of base64', randomBytes(31).toString('base64')],
    ['33 bytes of base64', randomBytes(33).toString('base64')],
    ['hex with a non-hex character', `${key.toString('hex').slice(0, 63)}g`],
    ['base64 with an invalid character', `${key.toString('base64').slice(0, 42)}!=`],
    ['base64 mixed with base64url', `+_${key.toString('base64url').slice(2)}`],
    ['a passphrase', 'correct horse battery staple, it is long enough!!'],
  ])('rejects %s without echoing it', (_name, value) => {
    let message = ''
    try {
      parseMasterKey(value)
    }
    catch (error) {
      message = (error as Error).message
    }
    expect(message).toMatch(/64 hex characters or as base64\/base64url/)
    if (value)
      expect(message).not.toContain(value.slice(0, 8))
  })
})
