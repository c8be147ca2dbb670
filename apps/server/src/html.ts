import { randomBytes } from 'node:crypto'

import type { FastifyReply } from 'fastify'

const htmlEscapes: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', '\'': '&#39;' }

/** Escapes text for HTML content and double-quoted attributes. */
export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, char => htmlEscapes[char]!)
}

export interface PageOptions {
  /** Inline script, run at the end of the body. */
  script?: string
  /** URL of a module script of our own origin (a built file), loaded under the page's nonce. */
  moduleScript?: string
  /** Extra `<head>` markup (already escaped). */
  head?: string
  /** `data-*` attributes of `<body>`, for the script to read; escaped here. */
  data?: Record<string, string>
  /** The CSP nonce that lets the page's own `<style>` and `<script>` run. */
  nonce?: string
}

/** A small, self-contained page (no external assets). `body` must already be escaped. */
function page(title: string, body: string, { script = '', moduleScript, head = '', data = {}, nonce }: PageOptions = {}): string {
  const dataAttributes = Object.entries(data).map(([name, value]) => ` data-${name}="${escapeHtml(value)}"`).join('')
  const nonceAttribute = nonce ? ` nonce="${escapeHtml(nonce)}"` : ''
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">${head ? `\n${head}` : ''}
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${escapeHtml(title)}</title>
<style${nonceAttribute}>
  body { font-family: system-ui, sans-serif; max-width: 26rem; margin: 3rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; }
  a.button, button { display: block; width: 100%; box-sizing: border-box; margin: .5rem 0; padding: .7rem; border: 1px solid #888; border-radius: .4rem; background: #fff; font-size: 1rem; text-align: center; text-decoration: none; color: inherit; cursor: pointer; }
  button.primary { background: #b5543c; border-color: #b5543c; color: #fff; }
  input { display: block; width: 100%; box-sizing: border-box; margin: .3rem 0 .8rem; padding: .6rem; font-size: 1rem; }
  .message { min-height: 1.5rem; color: #a33; }
  .message:empty, .notice:empty { display: none; }
  .notice { color: #2a6a3a; }
  .links { display: flex; justify-content: space-between; gap: 1rem; }
  button.link { display: inline; width: auto; margin: 0; padding: 0; border: none; background: none; color: #b5543c; text-decoration: underline; font-size: .95rem; }
  [hidden] { display: none !important; }
  hr { margin: 1.5rem 0; border: none; border-top: 1px solid #ddd; }
</style>
</head>
<body${dataAttributes}>
${body}
${script ? `<script${nonceAttribute}>${script}</script>` : ''}${moduleScript ? `<script${nonceAttribute} type="module" src="${escapeHtml(moduleScript)}"></script>` : ''}
</body>
</html>`
}

/**
 * Headers of our HTML pages: only their own style and scripts run (by nonce; a module
 * script's imports inherit it), they talk only to our origin, submit no forms natively, cannot be framed
 * (clickjacking) or MIME-sniffed, and send no Referer (their URLs carry OAuth
 * state and codes).
 */
function pageSecurityHeaders(nonce: string): Record<string, string> {
  return {
    'content-security-policy': [
      `default-src 'none'`,
      `script-src 'nonce-${nonce}'`,
      `style-src 'nonce-${nonce}'`,
      `connect-src 'self'`,
      `img-src 'self'`,
      `form-action 'none'`,
      `frame-ancestors 'none'`,
      `base-uri 'none'`,
    ].join('; '),
    'x-frame-options': 'DENY',
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    // A nonce is only secret once: a stored copy of the page must not be replayed.
    'cache-control': 'no-store',
  }
}

/** Sends a `page()` with a fresh nonce and `pageSecurityHeaders`; set the status before. */
export function sendPage(reply: FastifyReply, title: string, body: string, options: Omit<PageOptions, 'nonce'> = {}): FastifyReply {
  const nonce = randomBytes(16).toString('base64')
  return reply.headers(pageSecurityHeaders(nonce)).type('text/html; charset=utf-8').send(page(title, body, { ...options, nonce }))
}
