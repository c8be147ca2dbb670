import { fileURLToPath } from 'node:url'

import vue from '@vitejs/plugin-vue'
import { defineConfig } from 'vite'

// The API server the dev client talks to (`pnpm start` serves it on :3000).
const apiServer = process.env.VITE_API_SERVER_URL ?? 'http://localhost:3000'

export default defineConfig({
  // The same path in development and behind `pnpm start`, so the OIDC redirect URI is /app/callback in both.
  base: '/app/',
  plugins: [vue()],
  // vue-i18n's build flags: the composition API only (the legacy one is dropped from the bundle), no devtools hooks.
  define: {
    __VUE_I18N_FULL_INSTALL__: true,
    __VUE_I18N_LEGACY_API__: false,
    __INTLIFY_PROD_DEVTOOLS__: false,
  },
  build: {
    // The server renders /sign-in itself and finds that page's script through the manifest.
    manifest: true,
    rollupOptions: {
      input: {
        index: fileURLToPath(new URL('index.html', import.meta.url)),
        'sign-in': fileURLToPath(new URL('src/sign-in/main.ts', import.meta.url)),
      },
    },
  },
  server: {
    proxy: {
      '/trpc': { target: apiServer, ws: true },
      '/api': { target: apiServer, ws: true },
      '/sign-in': { target: apiServer },
      // The /sign-in page's script is the API server's build (the dev server serves /app/ from sources).
      '/app/assets': { target: apiServer },
    },
  },
})
