import { timingSafeEqual } from 'node:crypto'

import type { FastifyPluginAsync } from 'fastify'
import { z } from 'zod'

import { ApiError, type Api } from '@airi/api'

import { isCommandName, runCommand } from '../cli/commands.ts'

export interface OperatorPluginOptions {
  api: Api
  /** The bearer token written to server.json for `pnpm airi` (cli/target.ts). */
  token: string
}

const bodySchema = z.object({ command: z.string().min(1), input: z.unknown() })

/** 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6. */
function isLoopback(address: string | undefined): boolean {
  const ip = address?.replace(/^::ffff:/, '') ?? ''
  return ip === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(ip)
}

function sameSecret(given: string, expected: Buffer): boolean {
  const bytes = Buffer.from(given)
  return bytes.length === expected.length && timingSafeEqual(bytes, expected)
}

/**
 * `POST /operator`: a command of `pnpm airi` sent by the CLI on this machine when
 * this server holds the embedded database (no second process can open it). Runs
 * the CLI's own command table on this server's services; registered only in
 * development on the embedded default, with the token from server.json.
 */
export const operatorPlugin: FastifyPluginAsync<OperatorPluginOptions> = async (app, { api, token }) => {
  const expected = Buffer.from(`Bearer ${token}`)

  app.post('/operator', async (request) => {
    // The socket's own peer, not X-Forwarded-For: a proxy in front would make every client look local.
    if (!isLoopback(request.socket.remoteAddress))
      throw new ApiError(403, 'FORBIDDEN', 'Operator commands are accepted only from this machine')
    if (!sameSecret(request.headers.authorization ?? '', expected))
      throw new ApiError(401, 'UNAUTHORIZED', 'A valid operator token is required')
    const body = bodySchema.safeParse(request.body)
    if (!body.success)
      throw new ApiError(400, 'BAD_REQUEST', 'Expected { command, input }')
    if (!isCommandName(body.data.command))
      throw new ApiError(404, 'UNKNOWN_COMMAND', `No operator command ${body.data.command}`)
    request.log.info({ command: body.data.command }, 'operator command from the CLI')
    return { result: await runCommand(api.services, body.data.command, body.data.input) }
  })
}
