import { describe, expect, it } from 'vitest'

import { cliBlock, renderCliReference } from '@airi/tooling/scripts/cli-docs'
import { currentBlock } from '@airi/tooling/scripts/generated-block'

import { createProgram } from '../src/cli/program.ts'

describe('the CLI reference', () => {
  it('is what docs/operations.md shows (run `pnpm docs:cli` after changing a command)', async () => {
    expect(await currentBlock(cliBlock)).toBe(renderCliReference(createProgram()))
  })

  it('documents every command with its own help', () => {
    const reference = renderCliReference(createProgram())
    for (const command of ['llm add', 'llm list', 'llm remove', 'llm reconcile', 'tts add', 'stt add', 'config get', 'config set', 'config list', 'flux grant', 'admin add', 'admin remove', 'admin list', 'user create'])
      expect(reference).toContain(`#### \`pnpm airi ${command}\`\n\n\`\`\`text\nUsage: airi ${command} [options]`)
  })
})
