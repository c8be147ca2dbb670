import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'

import { Argument, Command, InvalidArgumentError, Option } from 'commander'

import { configKeys, type UpstreamKind } from '@airi/api'

import type { CommandInput, CommandName, CommandResult } from './commands.ts'
import { UsageError } from './errors.ts'
import * as print from './output.ts'
import { readSecret, secretFromEnv } from './secrets.ts'

/** One command to run, as the command line asked for it; its secrets already read. */
export interface CommandRequest {
  name: CommandName
  input: unknown
  /** Print the result as JSON instead of `print`. */
  json: boolean
  print: (result: unknown) => string
  /** Whether the result reports something not done (exit 1), such as an e-mail a grant did not reach. */
  failed?: (result: unknown) => boolean
  /** Refused with NODE_ENV=production. */
  developmentOnly?: boolean
  /** What `--json` prints, when it is more than the result. */
  asJson?: (result: unknown) => unknown
  /** A next step for a person, printed on stderr after the result. */
  hint?: (result: unknown) => string
}

export type Execute = (request: CommandRequest) => Promise<void>

interface RequestExtras<N extends CommandName> {
  failed?: (result: CommandResult<N>) => boolean
  developmentOnly?: boolean
  asJson?: (result: CommandResult<N>) => unknown
  hint?: (result: CommandResult<N>) => string
}

function request<N extends CommandName>(name: N, input: CommandInput<N>, json: boolean | undefined, printer: (result: CommandResult<N>) => string, extras: RequestExtras<N> = {}): CommandRequest {
  // Each function is called only with the result of this command.
  return { name, input, json: json === true, print: printer as (result: unknown) => string, ...extras as Omit<CommandRequest, 'name' | 'input' | 'json' | 'print'> }
}

function numberArgument(integer: boolean) {
  return (value: string): number => {
    const parsed = Number(value)
    if (value.trim() === '' || !Number.isFinite(parsed) || (integer && !Number.isInteger(parsed)))
      throw new InvalidArgumentError(integer ? 'expected a whole number' : 'expected a number')
    return parsed
  }
}

/** `--email a --email b,c` → ['a', 'b', 'c']. */
function collectList(value: string, previous: string[] = []): string[] {
  return [...previous, ...value.split(',').map(item => item.trim()).filter(Boolean)]
}

/** Every command prints lines for a person, or with `--json` one JSON document for a script. */
const JSON_HELP = 'print the result as JSON (for scripts)'

function leaf(parent: Command, name: string, description: string): Command {
  return parent.command(name).description(description)
}

const upstreamGroups: Record<UpstreamKind, { noun: string, entry: string, example: string }> = {
  llm: { noun: 'LLM', entry: 'LLM_ROUTER_CONFIG', example: 'pnpm airi llm add chat --base-url https://api.openai.com/v1 --model gpt-4o-mini --api-key-env OPENAI_API_KEY --default' },
  tts: { noun: 'speech (TTS)', entry: 'TTS_UPSTREAMS', example: 'pnpm airi tts add voice --base-url https://api.openai.com/v1 --model tts-1 --api-key-env OPENAI_API_KEY' },
  stt: { noun: 'transcription (STT)', entry: 'STT_UPSTREAMS', example: 'pnpm airi stt add whisper --base-url https://api.openai.com/v1 --model whisper-1 --api-key-env OPENAI_API_KEY' },
}

const API_KEY_ENV_HELP = 'read the API key from this environment variable; without it: a hidden prompt at a terminal, else the first line of stdin'

/** An API key from the variable `--api-key-env` names, else a hidden prompt or stdin ('' when none is typed there). */
async function apiKey(keyEnv: string | undefined, prompt: string): Promise<string> {
  return keyEnv === undefined ? readSecret(prompt) : secretFromEnv('--api-key-env', keyEnv)
}

/** The API key of an upstream; none (keep the stored one) when the prompt or stdin gives ''. */
async function upstreamKey(alias: string, keyEnv: string | undefined): Promise<string | undefined> {
  const key = await apiKey(keyEnv, `API key for ${alias} (Enter keeps the stored key): `)
  return key === '' ? undefined : key
}

function addUpstreamCommands(program: Command, kind: UpstreamKind, execute: Execute): void {
  const { noun, entry, example } = upstreamGroups[kind]
  const group = program.command(kind).description(`${noun} upstreams by alias (stored in ${entry})`)

  const add = leaf(group, 'add', `add an alias, or replace its upstream (base URL, model, key)${kind === 'llm' ? ' and price' : ''}`)
    .argument('<alias>', 'the model name clients ask for')
    .requiredOption('--base-url <url>', 'the upstream\'s OpenAI-compatible base URL (http or https)')
    .requiredOption('--model <name>', 'the upstream\'s model name')
    .option('--api-key-env <NAME>', `${API_KEY_ENV_HELP} (empty keeps the stored key)`)
  if (kind === 'llm') {
    add.option('--price-in <flux>', 'Flux per million input tokens (with --price-out; without both: the flat FLUX_PER_1K_TOKENS)', numberArgument(false))
      .option('--price-out <flux>', 'Flux per million output tokens', numberArgument(false))
  }
  if (kind === 'tts')
    add.addOption(new Option('--adapter <adapter>', 'the upstream\'s protocol').choices(['openai-compatible', 'azure']))
  add.option('--default', 'make it the default alias (the first alias always is)')
    .addHelpText('after', `\nThe key is stored encrypted and never printed; it is never read from the command line.\nExample:\n  ${example}`)
    .option('--json', JSON_HELP)
    .action(async (alias: string, options: { baseUrl: string, model: string, apiKeyEnv?: string, priceIn?: number, priceOut?: number, adapter?: 'openai-compatible' | 'azure', default?: boolean, json?: boolean }) => {
      if ((options.priceIn === undefined) !== (options.priceOut === undefined))
        throw new UsageError('--price-in and --price-out go together')
      const apiKey = await upstreamKey(alias, options.apiKeyEnv)
      await execute(request('upstreams.put', {
        kind,
        alias,
        baseUrl: options.baseUrl,
        model: options.model,
        ...(apiKey ? { apiKey } : {}),
        ...(options.adapter ? { adapter: options.adapter } : {}),
        ...(options.priceIn !== undefined && options.priceOut !== undefined ? { pricing: { inputPer1M: options.priceIn, outputPer1M: options.priceOut } } : {}),
        ...(options.default ? { makeDefault: true } : {}),
      }, options.json, result => print.aliasSaved(kind, result)))
    })

  leaf(group, 'list', `the ${noun} aliases, their upstreams and prices (keys shown as ••••1234)`)
    .option('--json', JSON_HELP)
    .action(async (options: { json?: boolean }) => {
      await execute(request('upstreams.list', { kind }, options.json, print.upstreamList))
    })

  leaf(group, 'remove', 'remove an alias (when it was the default, the first one left becomes it)')
    .argument('<alias>', 'the alias to remove')
    .option('--json', JSON_HELP)
    .action(async (alias: string, options: { json?: boolean }) => {
      await execute(request('upstreams.remove', { kind, alias }, options.json, result => print.removed(`${kind} alias ${alias}`, result.removed)))
    })

  if (kind === 'llm') {
    leaf(group, 'reconcile', 'settle the LLM calls a crash left pending (safe to run at any time, and again)')
      .option('--older-than-minutes <minutes>', 'only calls started at least this long ago (never fewer than the gateway\'s deadline allows)', numberArgument(false), 10)
      .option('--limit <rows>', 'at most this many calls', numberArgument(true), 1000)
      .option('--json', JSON_HELP)
      .action(async (options: { olderThanMinutes: number, limit: number, json?: boolean }) => {
        await execute(request('llm.reconcile', { olderThanMinutes: options.olderThanMinutes, limit: options.limit }, options.json, print.reconciled))
      })
  }
}

async function configValue(text: string | undefined, file: string | undefined): Promise<unknown> {
  if ((text === undefined) === (file === undefined))
    throw new UsageError('give the value as JSON, or --file path.json (one of the two)')
  const source = text ?? await readFile(file!, 'utf8').catch((error: NodeJS.ErrnoException) => {
    throw new UsageError(`--file ${file}: ${error.code === 'ENOENT' ? 'no such file' : error.message}`)
  })
  try {
    return JSON.parse(source)
  }
  catch (error) {
    throw new UsageError(`${file ?? 'the value'} is not JSON (${(error as Error).message}); a string needs its quotes, e.g. '"text"'`)
  }
}

function addConfigCommands(program: Command, execute: Execute): void {
  const group = program.command('config').description('operator config entries (validated by each entry\'s schema)')
  const key = () => new Argument('<KEY>', 'the entry').choices(configKeys)

  leaf(group, 'list', 'every entry: stored, default or missing, and its value')
    .option('--json', JSON_HELP)
    .action(async (options: { json?: boolean }) => {
      await execute(request('config.list', {}, options.json, print.configList))
    })

  leaf(group, 'get', 'one entry\'s value (the stored one, else its default)')
    .addArgument(key())
    .option('--json', JSON_HELP)
    .action(async (name: string, options: { json?: boolean }) => {
      await execute(request('config.get', { key: name as CommandInput<'config.get'>['key'] }, options.json, print.configEntry))
    })

  leaf(group, 'set', 'validate and store an entry; running servers use it at once (see `pnpm airi --help`)')
    .addArgument(key())
    .argument('[json]', 'the value as JSON, e.g. 100 or \'{"models":{}}\'')
    .option('--file <path>', 'read the value from a JSON file instead')
    .addHelpText('after', '\nAn invalid value is refused with each problem as `path: message` (exit 1).\nExamples:\n  pnpm airi config set INITIAL_USER_FLUX 500\n  pnpm airi config set TTS_UPSTREAMS --file tts.json')
    .option('--json', JSON_HELP)
    .action(async (name: string, text: string | undefined, options: { file?: string, json?: boolean }) => {
      const value = await configValue(text, options.file)
      await execute(request('config.set', { key: name as CommandInput<'config.set'>['key'], value: value as CommandInput<'config.set'>['value'] }, options.json, print.configSaved))
    })
}

function addKeyCommands(program: Command, execute: Execute): void {
  const group = program.command('key').description('upstream keys sealed for config entries set as JSON')
  leaf(group, 'seal', 'seal an API key with the master key and print it as { "id", "ciphertext" } for an entry\'s keys')
    .argument('<alias>', 'what the key is sealed for: streaming-tts (STREAMING_TTS_UPSTREAM), streaming-stt (STREAMING_STT_UPSTREAM), or an LLM, TTS or STT alias in an entry edited by hand')
    .option('--key-id <id>', 'the key\'s id in the entry (it is sealed with it)', 'primary')
    .option('--api-key-env <NAME>', API_KEY_ENV_HELP)
    .addHelpText('after', '\nThe key is never printed, nor read from the command line; the sealed key is one line of JSON on stdout.\nExample:\n  pnpm --silent airi key seal streaming-tts --api-key-env TTS_KEY')
    .option('--json', 'the same line of JSON, without the hint on stderr')
    .action(async (alias: string, options: { keyId: string, apiKeyEnv?: string, json?: boolean }) => {
      const key = await apiKey(options.apiKeyEnv, `API key to seal for ${alias}: `)
      if (!key)
        throw new UsageError('no API key given')
      await execute(request('keys.seal', { alias, keyId: options.keyId, apiKey: key }, false, print.sealedKey, options.json ? {} : { hint: () => print.sealedKeyHint(alias) }))
    })
}

function addAccountCommands(program: Command, execute: Execute): void {
  const flux = program.command('flux').description('Flux credits')
  leaf(flux, 'grant', 'credit Flux to accounts by e-mail, reported per e-mail (exit 1 when one was not credited)')
    .requiredOption('--email <email>', 'a recipient (repeat it, or separate e-mails with commas)', collectList)
    .requiredOption('--amount <flux>', 'Flux to credit each recipient (1–10000)', numberArgument(true))
    .requiredOption('--reason <text>', 'shown in each recipient\'s ledger')
    .option('--dry-run', 'report who would be credited; credit nobody')
    .option('--idempotency-key <key>', 'reusing the key of an earlier grant credits only those it did not (printed after each grant)')
    .addHelpText('after', '\nExample:\n  pnpm airi flux grant --email ada@example.com,alan@example.com --amount 500 --reason "beta thanks"')
    .option('--json', JSON_HELP)
    .action(async (options: { email: string[], amount: number, reason: string, dryRun?: boolean, idempotencyKey?: string, json?: boolean }) => {
      await execute(request('flux.grant', {
        emails: options.email,
        amount: options.amount,
        description: options.reason,
        dryRun: options.dryRun === true,
        ...(options.idempotencyKey ? { idempotencyKey: options.idempotencyKey } : {}),
      }, options.json, print.grantReport, { failed: print.grantMissedSomeone }))
    })

  const admin = program.command('admin').description('administrators (besides the server\'s ADMIN_EMAILS); admin pages and procedures also need a verified e-mail')
  leaf(admin, 'add', 'make an e-mail an administrator (no restart needed)')
    .argument('<email>', 'the e-mail')
    .option('--json', JSON_HELP)
    .action(async (email: string, options: { json?: boolean }) => {
      await execute(request('admins.add', { email }, options.json, result => result.added ? `${result.email} is now an administrator` : `${result.email} already was an administrator`))
    })
  leaf(admin, 'remove', 'stop an e-mail being an administrator (one from ADMIN_EMAILS is removed there)')
    .argument('<email>', 'the e-mail')
    .option('--json', JSON_HELP)
    .action(async (email: string, options: { json?: boolean }) => {
      await execute(request('admins.remove', { email }, options.json, result => result.removed ? `${result.email} is no longer an administrator` : `${result.email} was not an administrator`))
    })
  leaf(admin, 'list', 'every administrator, from ADMIN_EMAILS (env) or added here (stored)')
    .option('--json', JSON_HELP)
    .action(async (options: { json?: boolean }) => {
      await execute(request('admins.list', {}, options.json, print.adminList))
    })

  const user = program.command('user').description('accounts')
  leaf(user, 'create', 'create an account (development: refused with NODE_ENV=production)')
    .requiredOption('--email <email>', 'its e-mail')
    .option('--name <name>', 'its display name (default: the e-mail\'s local part)')
    .option('--verified', 'mark the e-mail verified (else a verification e-mail goes out)')
    .addOption(new Option('--password', 'type the password at a hidden prompt (or give it as the first line of stdin)').conflicts('passwordEnv'))
    .option('--password-env <NAME>', 'read the password from this environment variable')
    .addHelpText('after', '\nWith neither --password nor --password-env a password is generated and printed once.')
    .option('--json', JSON_HELP)
    .action(async (options: { email: string, name?: string, verified?: boolean, password?: boolean, passwordEnv?: string, json?: boolean }) => {
      let password: string
      let generated = false
      if (options.passwordEnv !== undefined) {
        password = secretFromEnv('--password-env', options.passwordEnv)
      }
      else if (options.password) {
        password = await readSecret(`password for ${options.email}: `)
        if (!password)
          throw new UsageError('no password given')
      }
      else {
        password = randomBytes(18).toString('base64url')
        generated = true
      }
      const shown = generated ? password : undefined
      await execute(request('users.create', { email: options.email, password, verified: options.verified === true, ...(options.name ? { name: options.name } : {}) }, options.json, result => print.userCreated(result, shown), {
        developmentOnly: true,
        // A generated password is shown once, so a script gets it too.
        asJson: result => (shown ? { ...result, generatedPassword: shown } : result),
      }))
    })
}

/**
 * The `pnpm airi` command tree. Building it connects to nothing, so docs and tests
 * can read its help; each action reads what it needs from the terminal or the
 * environment and hands one request to `execute`.
 */
export function createProgram(execute: Execute = executeLazily): Command {
  const program = new Command('airi')
    .description('Operate an AIRI server: upstream models and prices, operator config, Flux, administrators, accounts.')
    .exitOverride()
    .showHelpAfterError()
  program.addHelpText('after', `
Where it works:
  DATABASE_URL set  that database; with REDIS_URL set too, running servers see
                    config changes at once (else within about a minute)
  otherwise         the embedded database under DATA_DIR (default .data/),
                    started for the command; when a server holds it, the
                    command is sent to that server

Exit codes: 0 done, 1 the command failed (why is on stderr), 2 a mistake in
the command line. In scripts: pnpm --silent airi <command> --json`)
  addUpstreamCommands(program, 'llm', execute)
  addUpstreamCommands(program, 'tts', execute)
  addUpstreamCommands(program, 'stt', execute)
  addConfigCommands(program, execute)
  addKeyCommands(program, execute)
  addAccountCommands(program, execute)
  return program
}

async function executeLazily(request: CommandRequest): Promise<void> {
  const { execute } = await import('./execute.ts')
  await execute(request)
}
