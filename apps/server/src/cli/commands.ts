import { z } from 'zod'

import { ApiError, configKeys, fluxGrantInput, upstreamKinds, upstreamPutInput, type Api, type ConfigKey } from '@airi/api'

type Services = Api['services']

/** Who the services record as the author of a change made by `pnpm airi`. */
const CLI = 'cli'

interface OperatorCommand<S extends z.ZodType, R> {
  input: S
  run: (services: Services, input: z.output<S>) => Promise<R>
  /** Changes operator config, which running servers cache (see target.ts). */
  changesConfig?: boolean
}

const command = <S extends z.ZodType, R>(definition: OperatorCommand<S, R>) => definition

const kind = z.enum(upstreamKinds)
const alias = z.string().trim().min(1).max(200)
const email = z.email().max(320)
const configKey = z.enum(configKeys as [ConfigKey, ...ConfigKey[]])

/**
 * Everything `pnpm airi` does, each one call into a service. The CLI runs them
 * in-process, or sends `{ command, input }` to the server that holds the embedded
 * database (plugins/operator.ts), which runs the same entry: reading keys,
 * prompting and printing stay in the CLI (program.ts).
 */
const operatorCommands = {
  'upstreams.list': command({
    input: z.object({ kind }),
    run: (services, input) => services.operator.upstreams.list(input.kind),
  }),
  'upstreams.put': command({
    input: upstreamPutInput,
    run: (services, input) => services.operator.upstreams.put(input, CLI),
    changesConfig: true,
  }),
  'upstreams.remove': command({
    input: z.object({ kind, alias }),
    run: (services, input) => services.operator.upstreams.remove(input.kind, input.alias, CLI),
    changesConfig: true,
  }),
  'llm.reconcile': command({
    input: z.object({ olderThanMinutes: z.number().min(0), limit: z.number().int().min(1) }),
    run: (services, input) => services.llmGateway.reconcilePending({ olderThanMs: input.olderThanMinutes * 60_000, limit: input.limit }),
  }),
  'keys.seal': command({
    input: z.object({ alias, keyId: z.string().trim().min(1).max(100), apiKey: z.string().min(1).max(10_000) }),
    // Named `id` as in a config entry's `keys`, so the result is pasted as it is.
    run: async (services, input) => {
      const { keyId, ciphertext } = services.llmGateway.encryptKey(input.alias, input.keyId, input.apiKey)
      return { id: keyId, ciphertext }
    },
  }),
  'config.list': command({
    input: z.object({}),
    run: services => services.config.list(),
  }),
  'config.get': command({
    input: z.object({ key: configKey }),
    run: (services, input) => services.config.describe(input.key),
  }),
  'config.set': command({
    input: z.object({ key: configKey, value: z.json() }),
    run: async (services, input) => {
      await services.config.set(input.key, input.value, CLI)
      return services.config.describe(input.key)
    },
    changesConfig: true,
  }),
  'flux.grant': command({
    input: fluxGrantInput,
    run: (services, input) => services.fluxGrants.grant(input, CLI),
  }),
  'admins.list': command({
    input: z.object({}),
    run: services => services.operator.admins.list(),
  }),
  'admins.add': command({
    input: z.object({ email }),
    run: (services, input) => services.operator.admins.add(input.email, CLI),
  }),
  'admins.remove': command({
    input: z.object({ email }),
    run: (services, input) => services.operator.admins.remove(input.email),
  }),
  'users.create': command({
    input: z.object({ email, password: z.string().min(8).max(128), name: z.string().trim().min(1).max(200).optional(), verified: z.boolean() }),
    run: (services, input) => services.operator.users.create(input),
  }),
}

type Commands = typeof operatorCommands
export type CommandName = keyof Commands

/** What a command's result looks like once it went through JSON (a forwarded answer, `--json`): dates as ISO strings. */
type Wire<T> = T extends Date ? string : T extends Array<infer U> ? Array<Wire<U>> : T extends object ? { [K in keyof T]: Wire<T[K]> } : T
export type CommandInput<N extends CommandName> = z.input<Commands[N]['input']>
export type CommandResult<N extends CommandName> = Wire<Awaited<ReturnType<Commands[N]['run']>>>

export function isCommandName(name: string): name is CommandName {
  return Object.hasOwn(operatorCommands, name)
}

export function changesConfig(name: CommandName): boolean {
  return (operatorCommands[name] as { changesConfig?: boolean }).changesConfig === true
}

/**
 * Validates `input` with the command's schema and runs it; the result as it reads
 * after JSON, so both ways of running a command print the same.
 */
export async function runCommand<N extends CommandName>(services: Services, name: N, input: unknown): Promise<CommandResult<N>> {
  const definition = operatorCommands[name] as OperatorCommand<z.ZodType, unknown>
  const parsed = definition.input.safeParse(input)
  if (!parsed.success) {
    const issues = parsed.error.issues.map(issue => ({ path: issue.path, message: issue.message }))
    throw new ApiError(400, 'INVALID_INPUT', `Invalid input for ${name}`, { issues })
  }
  const result = await definition.run(services, parsed.data)
  return (result === undefined ? null : JSON.parse(JSON.stringify(result))) as CommandResult<N>
}
