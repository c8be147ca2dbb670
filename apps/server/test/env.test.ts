import { describe, expect, it } from 'vitest'

import { EnvError, parseEnv, requiredInProduction } from '../src/env.ts'

describe('environment', () => {
  it('starts on the embedded defaults with nothing set', () => {
    const env = parseEnv({})
    expect(env).toMatchObject({ NODE_ENV: 'development', HOST: '0.0.0.0', PORT: 3000, ADMIN_EMAILS: [], REDIS_KEY_PREFIX: '' })
    expect(env.DATABASE_URL).toBeUndefined()
    expect(env.REDIS_URL).toBeUndefined()
  })

  it('treats empty variables as unset and splits ADMIN_EMAILS', () => {
    const env = parseEnv({ DATABASE_URL: '', PORT: '8080', ADMIN_EMAILS: ' a@x.io, ,b@y.io ' })
    expect(env.DATABASE_URL).toBeUndefined()
    expect(env.PORT).toBe(8080)
    expect(env.ADMIN_EMAILS).toEqual(['a@x.io', 'b@y.io'])
  })

  it('names every invalid variable', () => {
    const error = (() => {
      try {
        parseEnv({ PORT: 'eighty', REDIS_URL: 'not a url' })
      }
      catch (e) {
        return e
      }
    })() as EnvError
    expect(error).toBeInstanceOf(EnvError)
    expect(error.problems.map(problem => problem.split(':')[0]).sort()).toEqual(['PORT', 'REDIS_URL'])
  })

  it('refuses production without its secrets and URLs, naming each missing one', () => {
    let error: EnvError | undefined
    try {
      parseEnv({ NODE_ENV: 'production', DATABASE_URL: 'postgres://u:p@db/airi' })
    }
    catch (e) {
      error = e as EnvError
    }
    expect(error).toBeInstanceOf(EnvError)
    const missing = requiredInProduction.filter(name => name !== 'DATABASE_URL')
    expect(error!.problems).toEqual(missing.map(name => `${name} is required when NODE_ENV=production`))
  })

  it('checks the shape of LLM_ROUTER_MASTER_KEY without echoing it', () => {
    expect(() => parseEnv({ LLM_ROUTER_MASTER_KEY: 'too-short-secret' })).toThrow(/LLM_ROUTER_MASTER_KEY/)
    expect(() => parseEnv({ LLM_ROUTER_MASTER_KEY: 'too-short-secret' })).not.toThrow(/too-short-secret/)
    expect(parseEnv({ LLM_ROUTER_MASTER_KEY: 'ab'.repeat(32) }).LLM_ROUTER_MASTER_KEY).toBe('ab'.repeat(32))
  })

  it('accepts production when everything required is set', () => {
    const complete = Object.fromEntries(requiredInProduction.map(name => [name, name.endsWith('_URL') ? 'https://example.com' : name === 'LLM_ROUTER_MASTER_KEY' ? 'ab'.repeat(32) : 'secret']))
    expect(parseEnv({ ...complete, NODE_ENV: 'production' }).NODE_ENV).toBe('production')
  })
})

describe('auth environment', () => {
  it('refuses half-configured providers and clients, naming both halves', () => {
    expect(() => parseEnv({ GITHUB_CLIENT_ID: 'id' })).toThrow('GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET must be set together')
    expect(() => parseEnv({ OIDC_CLIENT_SECRET_ELECTRON: 's' })).toThrow('OIDC_CLIENT_ID_ELECTRON and OIDC_CLIENT_SECRET_ELECTRON must be set together')
    expect(() => parseEnv({ OIDC_CLIENT_ID_WEB: 'web' })).toThrow('OIDC_WEB_REDIRECT_URIS is required')
  })

  it('reads the trusted clients, with the mobile default redirect', () => {
    const env = parseEnv({ OIDC_CLIENT_ID_WEB: 'web', OIDC_WEB_REDIRECT_URIS: 'https://a.example/cb, https://b.example/cb', OIDC_CLIENT_ID_POCKET: 'pocket' })
    expect(env.OIDC_WEB_REDIRECT_URIS).toEqual(['https://a.example/cb', 'https://b.example/cb'])
    expect(env.OIDC_POCKET_REDIRECT_URIS).toEqual(['capacitor://localhost/auth/callback'])
  })
})

describe('trusted clients from the environment', () => {
  it('makes web and mobile public, the desktop confidential with the relay page as redirect', async () => {
    const { trustedClients } = await import('../src/runtime.ts')
    const env = parseEnv({
      API_SERVER_URL: 'https://api.example.com/',
      OIDC_CLIENT_ID_WEB: 'web',
      OIDC_WEB_REDIRECT_URIS: 'https://app.example.com/cb',
      OIDC_CLIENT_ID_ELECTRON: 'desktop',
      OIDC_CLIENT_SECRET_ELECTRON: 'shh',
      OIDC_CLIENT_ID_POCKET: 'pocket',
    })
    expect(trustedClients(env)).toEqual([
      { clientId: 'web', name: 'AIRI web', redirectUris: ['https://app.example.com/cb'], applicationType: 'web' },
      { clientId: 'desktop', clientSecret: 'shh', name: 'AIRI desktop', redirectUris: ['https://api.example.com/api/auth/oidc/electron-callback'], applicationType: 'web' },
      { clientId: 'pocket', name: 'AIRI pocket', redirectUris: ['capacitor://localhost/auth/callback'], applicationType: 'native' },
    ])
  })
})
