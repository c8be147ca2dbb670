import { execFileSync } from 'node:child_process'
import { createRequire } from 'node:module'

import { describe, expect, it } from 'vitest'

// @ts-expect-error: a plain .mjs script without types
import { keepNamesCheaply } from '../scripts/dev-bundle.mjs'

// The esbuild the dev bundle uses (tsx's own).
const esbuildPath = createRequire(createRequire(import.meta.url).resolve('tsx/package.json')).resolve('esbuild')

describe('dev bundle (keepNames)', () => {
  it('keeps names without moving closures\' properties to a dictionary', async () => {
    // Untyped here: esbuild is tsx's dependency, not ours.
    const esbuild = await import(esbuildPath) as { build: (options: object) => Promise<{ outputFiles: Array<{ text: string }> }> }
    const source = `
      class Renamed {}
      export function make() {
        function declared() {}
        return { declared, Renamed }
      }
      globalThis.made = make()
    `
    // esbuild cannot parse natives syntax: the check goes after its output.
    // A closure whose name was redefined goes to dictionary mode (~400 B more each).
    const check = `const { declared, Renamed: cls } = globalThis.made
      console.log(JSON.stringify({ names: [declared.name, cls.name], fast: %HasFastProperties(declared) }))`
    const built = await esbuild.build({ stdin: { contents: source, loader: 'js' }, bundle: true, write: false, format: 'esm', platform: 'node', keepNames: true, logLevel: 'silent' })
    const code = `${keepNamesCheaply(built.outputFiles[0]!.text) as string}\n${check}`
    const output = execFileSync(process.execPath, ['--allow-natives-syntax', '--input-type=module', '-e', code], { encoding: 'utf8' })
    expect(JSON.parse(output)).toEqual({ names: ['declared', 'Renamed'], fast: true })
  })
})
