import vue from '@vitejs/plugin-vue'
import { defineConfig } from 'vite'

// The API server the dev client talks to (`pnpm start` serves it on :3000).
const apiServer = process.env.VITE_API_SERVER_URL ?? 'http://localhost:3000'

export default defineConfig({
  // The same path in development and behind `pnpm start`, so the OIDC redirect URI is /app/callback in both.
  base: '/app/',
  plugins: [vue()],
  server: {
    proxy: {
      '/trpc': { target: apiServer, ws: true },
      '/api': { target: apiServer, ws: true },
      '/sign-in': { target: apiServer },
    },
  },
})
