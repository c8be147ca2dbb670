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

  it('accepts production when everything required is set', () => {
    const complete = Object.fromEntries(requiredInProduction.map(name => [name, name.endsWith('_URL') ? 'https://example.com' : 'secret']))
    expect(parseEnv({ ...complete, NODE_ENV: 'production' }).NODE_ENV).toBe('production')
  })
})
