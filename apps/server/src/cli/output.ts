import { STREAMING_STT_KEY_ALIAS, STREAMING_TTS_KEY_ALIAS, type UpstreamKind } from '@airi/api'

import type { CommandResult } from './commands.ts'

// What each command prints for a person; `--json` prints the result itself.

/** Columns padded to their widest cell, two spaces apart. */
function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map(row => (row[column] ?? '').length)))
  const line = (cells: string[]) => cells.map((cell, column) => column === cells.length - 1 ? cell : cell.padEnd(widths[column]!)).join('  ').trimEnd()
  return [line(headers), ...rows.map(line)].join('\n')
}

type AliasView = CommandResult<'upstreams.put'>

function priceOf(alias: AliasView): string {
  return alias.pricing ? `${alias.pricing.inputPer1M} / ${alias.pricing.outputPer1M}` : 'flat'
}

/** One row per upstream; an alias's own columns only on its first. */
function aliasRows(kind: UpstreamKind, alias: AliasView): string[][] {
  return alias.upstreams.map((upstream, index) => {
    const first = index === 0
    const keys = upstream.keys.map(key => key.hint).join(' ') || '-'
    const own = [first ? alias.alias : '', first && alias.isDefault ? 'yes' : '']
    const shared = [upstream.model, upstream.baseUrl, keys]
    if (kind === 'llm')
      return [...own, ...shared, first ? priceOf(alias) : '']
    return [...own, ...shared, upstream.adapter ?? '']
  })
}

function aliasHeaders(kind: UpstreamKind): string[] {
  return ['alias', 'default', 'model', 'base URL', 'key', kind === 'llm' ? 'Flux per 1M in / out' : 'adapter']
}

export function aliasSaved(kind: UpstreamKind, alias: AliasView): string {
  return `saved ${kind} alias ${alias.alias}${alias.isDefault ? ' (the default)' : ''}\n${table(aliasHeaders(kind), aliasRows(kind, alias))}`
}

const flatUnits = { FLUX_PER_1K_TOKENS: 'Flux per 1 000 tokens', FLUX_PER_1K_CHARS_TTS: 'Flux per 1 000 characters', FLUX_PER_MINUTE_STT: 'Flux per minute of audio' } as const

export function upstreamList(list: CommandResult<'upstreams.list'>): string {
  const flat = `flat price: ${list.flatPrice.key} = ${list.flatPrice.value} (${flatUnits[list.flatPrice.key]})${list.kind === 'llm' ? ', for aliases without their own' : ''}`
  if (list.models.length === 0)
    return `no ${list.kind} aliases yet: add one with \`pnpm airi ${list.kind} add <alias> --base-url URL --model NAME\`\n${flat}`
  return `${table(aliasHeaders(list.kind), list.models.flatMap(alias => aliasRows(list.kind, alias)))}\n${flat}`
}

export function removed(what: string, done: boolean): string {
  return done ? `removed ${what}` : `no ${what}: nothing removed`
}

export function reconciled(report: CommandResult<'llm.reconcile'>): string {
  if (report.rows.length === 0)
    return `no pending calls started before ${report.cutoff}`
  return `${table(['call', 'user', 'outcome', 'flux'], report.rows.map(row => [row.callId, row.userId, row.outcome, String(row.flux)]))}\nsettled ${report.rows.length} pending call(s) started before ${report.cutoff}`
}

/** A value on one line, cut to `width` characters. */
function brief(value: unknown, width = 60): string {
  const text = value === undefined ? '-' : JSON.stringify(value)
  return text.length > width ? `${text.slice(0, width - 1)}…` : text
}

type ConfigEntry = CommandResult<'config.get'>

function stateOf(entry: ConfigEntry): string {
  return entry.isSet ? 'stored' : entry.missing ? 'missing' : 'default'
}

export function configList(entries: CommandResult<'config.list'>): string {
  return table(['key', 'state', 'value'], entries.map(entry => [entry.key, stateOf(entry), brief(entry.value)]))
}

export function configEntry(entry: ConfigEntry): string {
  const state = entry.isSet
    ? `stored ${entry.updatedAt}${entry.updatedBy ? ` by ${entry.updatedBy}` : ''}`
    : entry.missing ? 'not set, and no default: what needs it answers 503' : 'not stored: the default'
  return `${entry.key} (${state})${entry.value === undefined ? '' : `\n${JSON.stringify(entry.value, null, 2)}`}`
}

export function configSaved(entry: ConfigEntry): string {
  return `stored ${entry.key}: ${brief(entry.value)}`
}

type GrantResult = CommandResult<'flux.grant'>['results'][number]

/** An e-mail whose account was not (or, in a dry run, would not be) credited. */
const missed = (result: GrantResult) => result.status === 'failed' || (result.status === 'skipped' && (result.reason === 'not_found' || result.reason === 'deleted'))

export function grantMissedSomeone(report: CommandResult<'flux.grant'>): boolean {
  return report.results.some(missed)
}

function grantDetail(result: GrantResult): string {
  if (result.status === 'granted')
    return `balance ${result.balanceAfter}`
  if (result.status === 'failed')
    return result.error ?? ''
  return { not_found: 'no account has this e-mail', deleted: 'the account is deleted', duplicate: 'listed twice: credited once', already_granted: 'already credited by this grant' }[result.reason!] ?? ''
}

export function grantReport(report: CommandResult<'flux.grant'>): string {
  const rows = report.results.map(result => [result.email, result.status === 'skipped' ? `skipped (${result.reason})` : result.status, grantDetail(result)])
  const counts = Object.entries(report.summary).filter(([, count]) => count > 0).map(([status, count]) => `${count} ${status}`).join(', ')
  const summary = `${report.dryRun ? 'dry run, nothing credited: ' : ''}${report.amount} Flux each; ${counts}`
  const again = report.dryRun ? '' : `\nidempotency key ${report.idempotencyKey} (run again with --idempotency-key ${report.idempotencyKey} to credit only those not yet credited)`
  return `${table(['email', 'result', 'detail'], rows)}\n${summary}${again}`
}

export function adminList(admins: CommandResult<'admins.list'>): string {
  if (admins.length === 0)
    return 'no administrators: add one with `pnpm airi admin add <email>` (or ADMIN_EMAILS)'
  return table(['email', 'source', 'added'], admins.map(admin => [admin.email, admin.source, admin.addedAt ?? '']))
}

export function userCreated(user: CommandResult<'users.create'>, generatedPassword: string | undefined): string {
  const lines = [`created ${user.email} (id ${user.id}, e-mail ${user.emailVerified ? 'verified' : 'not verified: a verification e-mail went out'})`]
  if (generatedPassword)
    lines.push(`password (shown only now): ${generatedPassword}`)
  return lines.join('\n')
}

/** On one line whatever the mode, since it is pasted into a config value. */
export function sealedKey(key: CommandResult<'keys.seal'>): string {
  return JSON.stringify(key)
}

const streamingEntries: Record<string, string> = { [STREAMING_TTS_KEY_ALIAS]: 'STREAMING_TTS_UPSTREAM', [STREAMING_STT_KEY_ALIAS]: 'STREAMING_STT_UPSTREAM' }

export function sealedKeyHint(alias: string): string {
  const entry = streamingEntries[alias]
  return entry
    ? `paste it into the entry's keys, e.g. pnpm airi config set ${entry} '{"url": …, "keys": [<this>], …}'`
    : `paste it into the keys of ${alias} in LLM_ROUTER_CONFIG, TTS_UPSTREAMS or STT_UPSTREAMS, e.g. pnpm airi config set TTS_UPSTREAMS --file tts.json`
}
