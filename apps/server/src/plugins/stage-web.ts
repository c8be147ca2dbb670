import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import fastifyStatic from '@fastify/static'
import type { FastifyPluginAsync } from 'fastify'

import { sendPage } from '../html.ts'

/** Where the web client is served; its OIDC redirect URI is `{origin}/app/callback`. */
export const STAGE_WEB_PATH = '/app/'

/** `apps/stage-web/dist`, the same from `src/plugins` and from the build in `dist/plugins`. */
const STAGE_WEB_DIST = fileURLToPath(new URL('../../../stage-web/dist/', import.meta.url))

export interface StageWebPluginOptions {
  /** The built client; defaults to apps/stage-web/dist. */
  root?: string
}

/**
 * `GET /app/*`: the built stage-web. Hashed assets are cached for a year; every other
 * path under /app/ answers index.html, so the client's own routes (e.g. /app/callback)
 * survive a reload.
 */
export const stageWebPlugin: FastifyPluginAsync<StageWebPluginOptions> = async (app, { root = STAGE_WEB_DIST }) => {
  if (!existsSync(`${root}/index.html`)) {
    app.get(`${STAGE_WEB_PATH}*`, async (_request, reply) => sendPage(reply.status(503), 'AIRI web client',
      '<h1>The web client is not built</h1><p class="message">Run <code>pnpm --filter @airi/stage-web build</code> (or <code>pnpm start</code>, which builds it when missing).</p>'))
    return
  }
  await app.register(fastifyStatic, {
    root,
    prefix: STAGE_WEB_PATH,
    wildcard: false,
    index: ['index.html'],
    setHeaders(reply, path) {
      reply.header('cache-control', /[/\\]assets[/\\]/.test(path) ? 'public, max-age=31536000, immutable' : 'no-cache')
    },
  })
  app.get(`${STAGE_WEB_PATH}*`, async (_request, reply) => reply.header('cache-control', 'no-cache').sendFile('index.html', root))
  app.get(STAGE_WEB_PATH.slice(0, -1), async (_request, reply) => reply.redirect(STAGE_WEB_PATH, 302))
}
