// Builds the web client when dist/ is missing or older than any of its sources (or the
// SDK's), so `pnpm start` on a fresh clone serves it at /app/ with no extra step.
// `pnpm start` calls buildStageWebIfStale() inside the server's launcher (no extra
// process when nothing changed); `node scripts/build-if-stale.mjs` does the same alone.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { argv } from 'node:process'
import { fileURLToPath, pathToFileURL } from 'node:url'

const app = fileURLToPath(new URL('..', import.meta.url))
const built = join(app, 'dist', 'index.html')
const sources = [join(app, 'src'), join(app, 'public'), join(app, 'index.html'), join(app, 'vite.config.ts'), join(app, 'package.json'), join(app, '..', '..', 'packages', 'sdk', 'src')]

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
  // Built aside, then moved in: a server (or a test) serving dist/ meanwhile never sees
  // half a build, and pages still loading keep their old hashed assets.
  const aside = join(app, 'node_modules', '.cache', `build-${process.pid}-${Date.now()}`)
  try {
    execFileSync('pnpm', ['exec', 'vite', 'build', '--logLevel', 'warn', '--outDir', aside, '--emptyOutDir'], { cwd: app, stdio: 'inherit' })
    moveIn(aside, join(app, 'dist'))
  }
  finally {
    rmSync(aside, { recursive: true, force: true })
  }
  return true
}

/** Hashed assets are copied next to the old ones; every other file replaces its old self by a rename, index.html last. */
function moveIn(from, to) {
  mkdirSync(to, { recursive: true })
  const names = readdirSync(from, { recursive: true, withFileTypes: true }).filter(entry => entry.isFile()).map(entry => join(entry.parentPath, entry.name).slice(from.length + 1))
  for (const name of names.filter(name => name !== 'index.html')) {
    mkdirSync(join(to, name, '..'), { recursive: true })
    if (name.startsWith('assets'))
      cpSync(join(from, name), join(to, name), { force: false })
    else renameSync(join(from, name), join(to, name))
  }
  renameSync(join(from, 'index.html'), join(to, 'index.html'))
}

if (argv[1] && import.meta.url === pathToFileURL(argv[1]).href)
  buildStageWebIfStale()
