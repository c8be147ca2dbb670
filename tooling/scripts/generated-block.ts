import { readFile, writeFile } from 'node:fs/promises'

/** A block of a doc between two markers that a script writes (`pnpm docs:api`, `pnpm docs:cli`). */
export interface GeneratedBlock {
  /** The doc's absolute path. */
  path: string
  start: string
  end: string
  /** What to run when it is out of date. */
  command: string
}

/** The block as the doc has it now (markers included), or undefined when the doc lacks the markers. */
export async function currentBlock(block: GeneratedBlock): Promise<string | undefined> {
  const text = await readFile(block.path, 'utf8')
  const start = text.indexOf(block.start)
  const end = text.indexOf(block.end)
  return start >= 0 && end > start ? text.slice(start, end + block.end.length) : undefined
}

/** Rewrites the block with `generated`, or with `--check` on the command line exits 1 when it differs. */
export async function writeOrCheck(block: GeneratedBlock, generated: string): Promise<void> {
  const current = await currentBlock(block)
  if (!current)
    throw new Error(`${block.path} has no ${block.start} … ${block.end} block`)
  if (process.argv.includes('--check')) {
    if (current !== generated) {
      console.error(`${block.path} is out of date: run \`${block.command}\``)
      process.exit(1)
    }
    return
  }
  const text = await readFile(block.path, 'utf8')
  await writeFile(block.path, text.replace(current, () => generated))
}
