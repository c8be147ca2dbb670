// Builds the web client when dist/ is missing or older than any of its sources (or the
// SDK's), so `pnpm start` on a fresh clone serves it at /app/ with no extra step.
// `pnpm start` calls buildStageWebIfStale() inside the server's launcher (no extra
// process when nothing changed); `node scripts/build-if-stale.mjs` does the same alone.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
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

const isFresh = () => existsSync(built) && statSync(built).mtimeMs >= Math.max(...sources.map(newest))

// One build at a time: test files starting together (and `pnpm start` beside them) would
// each build the same client at once. The lock is a directory (made atomically) naming
// its holder; the others wait for it and find the client fresh.
const lock = join(app, 'node_modules', '.cache', 'build.lock')
/** How long a build may hold the lock before a waiter takes it over (a killed builder leaves it behind). */
const LOCK_STALE_MS = 10 * 60_000

function holderAlive() {
  try {
    process.kill(Number(readFileSync(join(lock, 'pid'), 'utf8')), 0)
    return true
  }
  catch (error) {
    // EPERM: it exists but is not ours to signal. No pid file yet: it is being made.
    return error.code === 'EPERM' || error.code === 'ENOENT'
  }
}

function takeLock() {
  mkdirSync(join(lock, '..'), { recursive: true })
  for (;;) {
    try {
      mkdirSync(lock)
      writeFileSync(join(lock, 'pid'), String(process.pid))
      return
    }
    catch (error) {
      if (error.code !== 'EEXIST')
        throw error
    }
    const age = Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now())
    if (age > LOCK_STALE_MS || !holderAlive())
      rmSync(lock, { recursive: true, force: true })
    else
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200)
  }
}

/** Runs `vite build` when dist/ is missing or stale; returns whether it built. */
export function buildStageWebIfStale() {
  if (isFresh())
    return false
  takeLock()
  try {
    // Another process may have built it while this one waited.
    if (isFresh())
      return false
    build()
    return true
  }
  finally {
    rmSync(lock, { recursive: true, force: true })
  }
}

function build() {
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
