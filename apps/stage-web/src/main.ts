import { createAiriClient } from '@airi/sdk'

// A shell for now: proves the SDK reaches the server. Sign-in, chat, Flux and voice
// arrive with their capabilities.
const client = createAiriClient({ baseUrl: window.location.origin })
const app = document.querySelector<HTMLElement>('#app')!

client.meta.info.query().then(
  info => (app.textContent = `Connected to ${info.service} ${info.version}`),
  (error: unknown) => (app.textContent = `Cannot reach the server: ${error instanceof Error ? error.message : String(error)}`),
)
