// Builds the web client when dist/ is missing or older than any of its sources (or the
// SDK's), so `pnpm start` on a fresh clone serves it at /app/ with no extra step.
// `pnpm start` calls buildStageWebIfStale() inside the server's launcher (no extra
// process when nothing changed); `node scripts/build-if-stale.mjs` does the same alone.
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { argv } from 'node:process'
import { fileURLToPath, pathToFileURL } from 'node:url'

const app = fileURLToPath(new URL('..', import.meta.url))
const built = join(app, 'dist', 'index.html')
const sources = [join(app, 'src'), join(app, 'index.html'), join(app, 'vite.config.ts'), join(app, 'package.json'), join(app, '..', '..', 'packages', 'sdk', 'src')]

function newest(path) {
  if (!existsSync(path))
    return 0
  const stat = statSync(path)
  if (!stat.isDirectory())
    return stat.mtimeMs
  return Math.max(stat.mtimeMs, ...readdirSync(path).map(name => newest(join(path, name))))
}

/** Runs `vite build` when dist/ is missing or stale; returns whether it built. */
export function buildStageWebIfStale() {
  if (existsSync(built) && statSync(built).mtimeMs >= Math.max(...sources.map(newest)))
    return false
  console.warn('building the web client (apps/stage-web) for /app/ …')
  execFileSync('pnpm', ['exec', 'vite', 'build', '--logLevel', 'warn'], { cwd: app, stdio: 'inherit' })
  return true
}

if (argv[1] && import.meta.url === pathToFileURL(argv[1]).href)
  buildStageWebIfStale()
