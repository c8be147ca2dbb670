import { AiriError, createAiriClient, toAiriError } from '@airi/sdk'

import { i18n } from './i18n.ts'
import { baseUrl, getAccessToken, SignInError } from './session.ts'

/** The one API client of the app: tRPC over HTTP batching and a WebSocket for live sync. */
export const client = createAiriClient({ baseUrl, getToken: getAccessToken, getLanguage: () => i18n.global.locale.value })

/** The fields a refused input names (`path → message`), when the server listed them. */
function fieldErrorsOf(error: unknown): string | undefined {
  const fieldErrors = (error as { data?: { fieldErrors?: Record<string, string[] | string> } }).data?.fieldErrors
  if (!fieldErrors)
    return undefined
  return Object.entries(fieldErrors).map(([field, messages]) => `${field}: ${[messages].flat().join(', ')}`).join('; ')
}

/** A sentence a person can act on, in their language, for any failed call. */
export function errorMessage(error: unknown): string {
  const { t } = i18n.global
  if (error instanceof TypeError)
    return t('app.errors.offline')
  const failure = error instanceof AiriError ? error : toAiriError(error)
  switch (failure.code) {
    case 'INSUFFICIENT_FLUX': return t('app.errors.insufficientFlux')
    case 'CONFIG_NOT_SET': return t('app.errors.notConfigured')
  }
  if (failure.status === 401)
    return t('app.errors.sessionEnded')
  if (failure.status === 403)
    return t('app.errors.forbidden')
  if (failure.status === 404)
    return t('app.errors.notFound')
  if (failure.status === 429)
    return t('app.errors.rateLimited')
  const details = fieldErrorsOf(error)
  if (failure.status === 400 && details)
    return t('app.errors.invalid', { details })
  return t('app.errors.unknown', { message: failure.message })
}

/** What went wrong signing in or out, in the person's language. */
export function signInErrorMessage(error: unknown): string {
  if (error instanceof SignInError)
    return i18n.global.t(`app.signInErrors.${error.code}`)
  return errorMessage(error)
}
