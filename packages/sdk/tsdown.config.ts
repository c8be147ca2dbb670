import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { defineConfig } from 'tsdown'

import { emitDeclarations } from './scripts/declarations.ts'

// `pnpm build`: dist/index.js (ESM) and dist/index.d.ts, what `pnpm pack` ships.
// Only `dependencies` stay imports; the router's types from @airi/api and @airi/db
// are inlined into the declarations (see scripts/declarations.ts).
const declarationsDir = mkdtempSync(join(tmpdir(), 'airi-sdk-dts-'))

export default defineConfig([
  {
    entry: { index: 'src/index.ts' },
    format: 'esm',
    platform: 'neutral',
    fixedExtension: false,
    dts: false,
  },
  {
    entry: { index: join(declarationsDir, 'sdk/src/index.d.ts') },
    format: 'esm',
    platform: 'neutral',
    fixedExtension: false,
    clean: false,
    // Third-party types stay imports; only relative (workspace) declarations are inlined.
    deps: { neverBundle: /^[^./]/ },
    dts: { dtsInput: true, emitDtsOnly: true },
    hooks: {
      'build:prepare': () => {
        emitDeclarations(declarationsDir)
      },
      'build:done': () => {
        rmSync(declarationsDir, { recursive: true, force: true })
      },
    },
  },
])
