import { errorMessage } from '../../client.ts'
import { i18n } from '../../i18n.ts'

/** One problem the server found in a config value: where it is, and what is wrong. */
export interface ConfigIssue { path: Array<string | number>, message: string }

interface ErrorData { httpStatus?: number, apiCode?: string, details?: { issues?: unknown }, fieldErrors?: Record<string, string[]> }

const dataOf = (error: unknown): ErrorData => (error as { data?: ErrorData } | null)?.data ?? {}

/** The domain code of a failed call (`USER_NOT_FOUND`, `INVALID_CONFIG_VALUE`, …), if it has one. */
export const apiCode = (error: unknown): string | undefined => dataOf(error).apiCode

/** What the entry's schema refused, for a 400 `INVALID_CONFIG_VALUE`; null for any other failure. */
export function configIssues(error: unknown): ConfigIssue[] | null {
  const data = dataOf(error)
  if (data.apiCode !== 'INVALID_CONFIG_VALUE' || !Array.isArray(data.details?.issues))
    return null
  return (data.details.issues as ConfigIssue[]).filter(issue => Array.isArray(issue.path) && typeof issue.message === 'string')
}

/** `models.chat.upstreams.0.baseUrl`, or words for the value as a whole. */
export const issuePath = (issue: ConfigIssue): string => issue.path.length > 0 ? issue.path.join('.') : i18n.global.t('admin.errors.wholeValue')

/** The input fields a 400 named (dotted paths of the procedure's input), as forms show them. */
const inputFieldErrors = (error: unknown): Record<string, string[]> => dataOf(error).fieldErrors ?? {}

/** Like the app's `errorMessage`, with the words an operator needs for a refusal of an admin call. */
export function adminErrorMessage(error: unknown): string {
  const { httpStatus } = dataOf(error)
  if (httpStatus === 403)
    return i18n.global.t('admin.errors.notOperator')
  return errorMessage(error)
}

/**
 * Every problem a refused form submission named, by form field ('' for the form as a
 * whole): the procedure's own input checks name input fields; a value the config entry
 * refused names a path in the entry, which `fieldOfIssue` places on the form.
 */
export function formErrors(error: unknown, fieldOfIssue: (path: string[]) => string): Record<string, string[]> {
  const errors: Record<string, string[]> = {}
  const add = (field: string, message: string) => (errors[field] ??= []).push(message)
  for (const [field, messages] of Object.entries(inputFieldErrors(error)))
    messages.forEach(message => add(field, message))
  for (const issue of configIssues(error) ?? [])
    add(fieldOfIssue(issue.path.map(String)), issue.message)
  if (Object.keys(errors).length === 0)
    add('', adminErrorMessage(error))
  return errors
}
