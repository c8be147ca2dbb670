import { fileURLToPath } from 'node:url'

import { createProgram } from '../../apps/server/src/cli/program.ts'
import { writeOrCheck, type GeneratedBlock } from './generated-block.ts'

// Regenerates the CLI reference in docs/operations.md from the CLI's own help:
//   pnpm docs:cli          rewrite the block
//   pnpm docs:cli --check  exit 1 when the block is out of date

const START = '<!-- generated:cli:start -->'
const END = '<!-- generated:cli:end -->'
type Command = ReturnType<typeof createProgram>

/** The CLI reference of docs/operations.md. */
export const cliBlock: GeneratedBlock = { path: fileURLToPath(new URL('../../docs/operations.md', import.meta.url)), start: START, end: END, command: 'pnpm docs:cli' }

/** Wide enough for the options' descriptions, and the same on every machine. */
const HELP_WIDTH = 100

/** The help a command prints for `--help` (with its examples), at a fixed width. */
function helpOf(command: Command): string {
  let text = ''
  command.configureOutput({ writeOut: chunk => (text += chunk), getOutHelpWidth: () => HELP_WIDTH, getOutHasColors: () => false })
  command.outputHelp()
  return text.trimEnd()
}

function pathOf(command: Command): string {
  const names: string[] = []
  for (let current: Command | null = command; current?.parent; current = current.parent)
    names.unshift(current.name())
  return ['pnpm airi', ...names].join(' ')
}

/** The commands that run something (not the groups, whose lists the program's help already shows). */
function leaves(command: Command): Command[] {
  return command.commands.flatMap(child => child.commands.length > 0 ? leaves(child) : [child])
}

/** The program's help and every command's, as Markdown between the markers. */
export function renderCliReference(program: Command): string {
  const sections = [program, ...leaves(program)].map(command => `#### \`${pathOf(command)}\`\n\n\`\`\`text\n${helpOf(command)}\n\`\`\``)
  return [START, ...sections, END].join('\n\n')
}

async function main(): Promise<void> {
  await writeOrCheck(cliBlock, renderCliReference(createProgram()))
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1])
  await main()
