import { baseUrl, getAccessToken } from './session.ts'

// The LLM gateway is OpenAI-compatible REST (not tRPC), so plain fetch with the same token.
const GATEWAY = `${baseUrl}/api/v1/openai`

export interface ChatTurn { role: 'system' | 'user' | 'assistant', content: string }

async function authorized(path: string, init: RequestInit = {}): Promise<Response> {
  const token = await getAccessToken()
  const response = await fetch(`${GATEWAY}${path}`, { ...init, headers: { ...init.headers, authorization: `Bearer ${token}` } })
  if (!response.ok) {
    const body = await response.json().catch(() => ({})) as { error?: { code?: string, message?: string } }
    if (body.error?.code === 'INSUFFICIENT_FLUX')
      throw new Error('Not enough Flux. Top up on the Flux page.')
    throw new Error(body.error?.message ?? `The gateway answered ${response.status}`)
  }
  return response
}

export async function listModels(): Promise<string[]> {
  const body = await (await authorized('/models')).json() as { data: Array<{ id: string }> }
  return body.data.map(model => model.id)
}

/** Streams a completion; `onDelta` gets each piece of text as it arrives. Returns the whole reply. */
export async function streamReply(model: string, messages: ChatTurn[], onDelta: (text: string) => void, signal?: AbortSignal): Promise<string> {
  const response = await authorized('/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages, stream: true }),
    signal,
  })
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  let reply = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done)
      break
    buffer += value
    const lines = buffer.split('\n')
    buffer = lines.pop() ?? ''
    for (const line of lines) {
      if (!line.startsWith('data:'))
        continue
      const data = line.slice(5).trim()
      if (data === '[DONE]')
        return reply
      const chunk = JSON.parse(data) as { choices?: Array<{ delta?: { content?: string } }>, error?: { message?: string } }
      if (chunk.error)
        throw new Error(chunk.error.message ?? 'The reply stopped')
      const delta = chunk.choices?.[0]?.delta?.content
      if (delta) {
        reply += delta
        onDelta(delta)
      }
    }
  }
  return reply
}
