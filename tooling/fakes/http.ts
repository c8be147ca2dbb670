import type { IncomingMessage, ServerResponse } from 'node:http'

/** Answers JSON, unless the response already started or the client is gone. */
export function answer(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent || res.destroyed)
    return
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}

export async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of req)
    chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}
