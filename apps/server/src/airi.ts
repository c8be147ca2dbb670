import { CommanderError } from 'commander'

import { CommandFailed, UsageError } from './cli/errors.ts'
import { createProgram } from './cli/program.ts'

// `pnpm airi <command>` (`node launch.js airi …`): the operator CLI (cli/program.ts,
// docs/operations.md#the-operator-cli). Exit codes: 0 done, 1 the command failed,
// 2 a mistake in the command line.

async function run(args: string[]): Promise<number> {
  try {
    await createProgram().parseAsync(args, { from: 'user' })
    return 0
  }
  catch (error) {
    // Commander has printed the usage already; --help (and help) exit 0.
    if (error instanceof CommanderError)
      return error.exitCode === 0 ? 0 : 2
    if (error instanceof UsageError) {
      process.stderr.write(`error: ${error.message}\n`)
      return 2
    }
    if (error instanceof CommandFailed)
      return error.exitCode
    process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`)
    return 1
  }
}

// launch.js passes its entry name (`airi`) first.
const code = await run(process.argv.slice(3))
// Redis reconnects, a stdin left open: nothing else may keep the command running once it is done.
process.stdout.write('', () => process.exit(code))
