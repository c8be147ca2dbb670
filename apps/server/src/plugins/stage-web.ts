import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import fastifyStatic from '@fastify/static'
import type { FastifyPluginAsync } from 'fastify'

import { sendPage } from '../html.ts'

/** Where the web client is served; its OIDC redirect URI is `{origin}/app/callback`. */
export const STAGE_WEB_PATH = '/app/'

/** `apps/stage-web/dist`, the same from `src/plugins` and from the build in `dist/plugins`. */
export const STAGE_WEB_DIST = fileURLToPath(new URL('../../../stage-web/dist/', import.meta.url))

/**
 * The client's policy: its own scripts, styles, fonts and API only (the WebSockets
 * are on our origin too); pictures also from any https host (avatars and covers are
 * URLs people enter) and from data:/blob: URLs the app makes; audio from blob: URLs
 * (speech). Vite's build has no inline script or style, and the app's `:style`
 * bindings and chart.js set styles through the CSSOM, which style-src does not cover.
 */
const APP_CSP = [
  `default-src 'self'`,
  `script-src 'self'`,
  `style-src 'self'`,
  `img-src 'self' data: blob: https:`,
  `media-src 'self' blob:`,
  `connect-src 'self'`,
  `font-src 'self'`,
  `object-src 'none'`,
  `base-uri 'self'`,
  `form-action 'self'`,
  `frame-ancestors 'none'`,
].join('; ')

const APP_HEADERS = {
  'content-security-policy': APP_CSP,
  'x-content-type-options': 'nosniff',
  // The app's URLs carry OAuth codes (/app/callback) and chat ids: no other site sees them.
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
}

interface ManifestChunk { file: string }

/**
 * The URL of a built Vite entry (`src/sign-in/main.ts` → `/app/assets/sign-in-….js`),
 * read from the build's `.vite/manifest.json` and read again when a build replaced it;
 * undefined while the client is not built.
 */
export function stageWebEntries(root = STAGE_WEB_DIST): (source: string) => string | undefined {
  const path = join(root, '.vite', 'manifest.json')
  let read: { mtimeMs: number, manifest: Record<string, ManifestChunk | undefined> } | undefined
  return (source) => {
    const mtimeMs = existsSync(path) ? statSync(path).mtimeMs : undefined
    if (mtimeMs === undefined)
      return undefined
    if (read?.mtimeMs !== mtimeMs)
      read = { mtimeMs, manifest: JSON.parse(readFileSync(path, 'utf8')) as Record<string, ManifestChunk | undefined> }
    const file = read.manifest[source]?.file
    return file ? `${STAGE_WEB_PATH}${file}` : undefined
  }
}

export interface StageWebPluginOptions {
  /** The built client; defaults to apps/stage-web/dist. */
  root?: string
}

/**
 * `GET /app/*`: the built stage-web. Hashed assets are cached for a year; every other
 * path under /app/ answers index.html, so the client's own routes (e.g. /app/callback)
 * survive a reload. Every answer carries the client's Content-Security-Policy.
 */
export const stageWebPlugin: FastifyPluginAsync<StageWebPluginOptions> = async (app, { root = STAGE_WEB_DIST }) => {
  if (!existsSync(`${root}/index.html`)) {
    app.get(`${STAGE_WEB_PATH}*`, async (_request, reply) => sendPage(reply.status(503), 'AIRI web client',
      '<h1>The web client is not built</h1><p class="message">Run <code>pnpm --filter @airi/stage-web build</code> (or <code>pnpm start</code>, which builds it when missing).</p>'))
    return
  }
  app.addHook('onRequest', async (_request, reply) => {
    reply.headers(APP_HEADERS)
  })
  await app.register(fastifyStatic, {
    root,
    prefix: STAGE_WEB_PATH,
    wildcard: false,
    index: ['index.html'],
    setHeaders(reply, path) {
      reply.header('cache-control', /[/\\]assets[/\\]/.test(path) ? 'public, max-age=31536000, immutable' : 'no-cache')
    },
  })
  app.get(`${STAGE_WEB_PATH}*`, async (request, reply) => {
    // A hashed file this server does not have (a build newer than its start) is not a page.
    if (request.url.startsWith(`${STAGE_WEB_PATH}assets/`))
      return reply.callNotFound()
    return reply.header('cache-control', 'no-cache').sendFile('index.html', root)
  })
  app.get(STAGE_WEB_PATH.slice(0, -1), async (_request, reply) => reply.redirect(STAGE_WEB_PATH, 302))
}
