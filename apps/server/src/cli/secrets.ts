import { createInterface } from 'node:readline'
import { Writable } from 'node:stream'

import { UsageError } from './errors.ts'

/** The value of the environment variable an option names (`--api-key-env NAME`); a missing or empty one is a usage error. */
export function secretFromEnv(option: string, name: string): string {
  const value = process.env[name]?.trim()
  if (!value)
    throw new UsageError(`${option} ${name}: the environment variable ${name} is not set or empty`)
  return value
}

/**
 * A secret typed at a hidden prompt when stdin is a terminal, else the first line
 * of stdin (`printf %s "$KEY" | pnpm airi llm add …`); '' when stdin is empty.
 * Secrets never come from argv, where `ps` and shell histories keep them.
 */
export function readSecret(prompt: string): Promise<string> {
  return process.stdin.isTTY ? hiddenPrompt(prompt) : firstLine()
}

function hiddenPrompt(prompt: string): Promise<string> {
  // readline echoes what is typed to its output: give it one that shows nothing. It
  // turns the terminal's own echo off as it starts, so the prompt is shown only then.
  const muted = new Writable({ write: (_chunk, _encoding, done) => done() })
  const reader = createInterface({ input: process.stdin, output: muted, terminal: true })
  process.stderr.write(prompt)
  return new Promise((resolve, reject) => {
    reader.on('SIGINT', () => {
      reader.close()
      process.stderr.write('\n')
      reject(new UsageError('cancelled'))
    })
    reader.question('', (answer) => {
      reader.close()
      process.stderr.write('\n')
      resolve(answer.trim())
    })
  })
}

async function firstLine(): Promise<string> {
  const reader = createInterface({ input: process.stdin, crlfDelay: Infinity })
  try {
    for await (const line of reader)
      return line.trim()
    return ''
  }
  finally {
    reader.close()
    process.stdin.destroy()
  }
}
