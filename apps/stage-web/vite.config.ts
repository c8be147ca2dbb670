import { defineConfig } from 'vite'

// The API server the dev client talks to (`pnpm start` serves it on :3000).
const apiServer = process.env.VITE_API_SERVER_URL ?? 'http://localhost:3000'

export default defineConfig({
  server: {
    proxy: {
      '/trpc': { target: apiServer, ws: true },
      '/api': { target: apiServer, ws: true },
    },
  },
})
