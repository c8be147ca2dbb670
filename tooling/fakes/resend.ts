import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

import { answer, readBody } from './http.ts'

/** One e-mail as the fake received it, `to` normalized to a list. */
export interface FakeEmail {
  id: string
  from: string
  to: string[]
  subject: string
  html: string
  text: string
}

export interface FakeFailure {
  status: number
  /** The JSON body to answer with; defaults to Resend's error shape for `status`. */
  body?: unknown
}

export interface FakeResendOptions {
  /** The only key accepted as `Authorization: Bearer <key>`. */
  apiKey?: string
  /** Answer every send with this failure: an outage for the fake's whole life. */
  failWith?: FakeFailure
}

export interface FakeResend {
  /** Pass as the SDK's `baseUrl`. */
  url: string
  port: number
  apiKey: string
  emails: FakeEmail[]
  /** The next `POST /emails` answers `status` with `body` (Resend's error shape by default). */
  failNext: (status: number, body?: unknown) => void
  /** Resolves with the first received e-mail (already or later) matching `predicate`. */
  waitForEmail: (predicate: (email: FakeEmail) => boolean, timeoutMs?: number) => Promise<FakeEmail>
  /** The first http(s) URL in the e-mail's plain text. */
  linkIn: (email: FakeEmail) => string
  close: () => Promise<void>
}

/**
 * A local stand-in for Resend's HTTP API: `POST /emails` as the `resend` SDK calls
 * it (JSON body, `to` a string or a list, bearer key), answering `{ id }` or
 * Resend's error body `{ statusCode, name, message }`.
 */
export async function startFakeResend({ apiKey = 're_test_fake_key', failWith }: FakeResendOptions = {}): Promise<FakeResend> {
  const emails: FakeEmail[] = []
  const failures: FakeFailure[] = []
  const waiters = new Set<(email: FakeEmail) => void>()

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      answer(res, 500, errorBody(500, 'internal_server_error', error instanceof Error ? error.message : String(error)))
    })
  })

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://fake').pathname
    if (path !== '/emails')
      return answer(res, 404, errorBody(404, 'not_found', 'The requested endpoint does not exist.'))
    if (req.method !== 'POST')
      return answer(res, 405, errorBody(405, 'method_not_allowed', 'Method is not allowed for the requested path.'))

    const auth = req.headers.authorization
    if (!auth)
      return answer(res, 401, errorBody(401, 'missing_api_key', 'Missing API key in the authorization header.'))
    if (auth !== `Bearer ${apiKey}`)
      return answer(res, 401, errorBody(401, 'invalid_api_key', 'API key is invalid'))

    const failure = failures.shift() ?? failWith
    if (failure)
      return answer(res, failure.status, failure.body ?? errorBody(failure.status, failure.status >= 500 ? 'internal_server_error' : 'application_error', 'Fake failure'))

    let body: Record<string, unknown>
    try {
      body = JSON.parse(await readBody(req)) as Record<string, unknown>
    }
    catch {
      return answer(res, 422, errorBody(422, 'validation_error', 'Invalid JSON body.'))
    }
    const to = typeof body.to === 'string' ? [body.to] : body.to
    for (const [field, ok] of [['from', typeof body.from === 'string'], ['to', Array.isArray(to) && to.length > 0 && to.every(item => typeof item === 'string')], ['subject', typeof body.subject === 'string']] as const) {
      if (!ok)
        return answer(res, 422, errorBody(422, 'missing_required_field', `The \`${field}\` field is missing or invalid.`))
    }
    if (typeof body.html !== 'string' && typeof body.text !== 'string')
      return answer(res, 422, errorBody(422, 'validation_error', 'Either `html` or `text` must be provided.'))

    const email: FakeEmail = {
      id: randomUUID(),
      from: body.from as string,
      to: to as string[],
      subject: body.subject as string,
      html: typeof body.html === 'string' ? body.html : '',
      text: typeof body.text === 'string' ? body.text : '',
    }
    emails.push(email)
    for (const waiter of waiters)
      waiter(email)
    answer(res, 200, { id: email.id })
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    apiKey,
    emails,
    failNext(status, body) {
      failures.push({ status, body })
    },
    waitForEmail(predicate, timeoutMs = 5000) {
      const found = emails.find(predicate)
      if (found)
        return Promise.resolve(found)
      return new Promise((resolve, reject) => {
        const waiter = (email: FakeEmail) => {
          if (!predicate(email))
            return
          clearTimeout(timer)
          waiters.delete(waiter)
          resolve(email)
        }
        const timer = setTimeout(() => {
          waiters.delete(waiter)
          reject(new Error(`fake Resend: no matching e-mail within ${timeoutMs} ms (${emails.length} received)`))
        }, timeoutMs)
        waiters.add(waiter)
      })
    },
    linkIn(email) {
      const match = /https?:\/\/\S+/.exec(email.text)
      if (!match)
        throw new Error(`fake Resend: no link in the e-mail "${email.subject}"`)
      return match[0]
    },
    close() {
      // fetch keeps connections alive; without this, close() would wait for them to time out.
      server.closeAllConnections()
      return new Promise<void>((resolve, reject) => server.close(error => (error ? reject(error) : resolve())))
    },
  }
}

function errorBody(statusCode: number, name: string, message: string) {
  return { statusCode, name, message }
}


