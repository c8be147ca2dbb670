// `pnpm start` (`node apps/server/launch.js main`), `pnpm db:migrate` (`node launch.js
// migrate`) and any other entry point in src/. With NODE_ENV=production they run the
// build from `pnpm build` with plain Node. Anywhere else they run the TypeScript
// sources, bundled once and reused until a source changes, so a fresh clone starts
// with no build step; `main` first builds stage-web when it is missing or stale.
import { existsSync } from 'node:fs'
import { register } from 'node:module'
import { argv, env, exit, setSourceMapsEnabled } from 'node:process'
import { fileURLToPath } from 'node:url'

const entry = argv[2]
if (!entry || !/^[\w-]+$/.test(entry)) {
  console.error('usage: node launch.js <entry>, for src/<entry>.ts (main, migrate, …)')
  exit(2)
}

// Run by a package manager (`pnpm start`), our parent is pnpm or its shell. If it dies
// without passing a signal on (SIGKILL, a shell killed in between), nobody is left to
// stop this process or its embedded Postgres: losing that parent counts as SIGTERM.
// Started any other way, the parent may rightly leave (`node launch.js main &`).
if (env.npm_lifecycle_event) {
  const parent = process.ppid
  const watch = setInterval(() => {
    if (process.ppid !== parent) {
      clearInterval(watch)
      process.kill(process.pid, 'SIGTERM')
    }
  }, 500)
  watch.unref()
}

if (env.NODE_ENV === 'production') {
  const built = new URL(`./dist/${entry}.js`, import.meta.url)
  if (!existsSync(built)) {
    console.error(`${fileURLToPath(built)} is missing: run \`pnpm build\` first (NODE_ENV=production runs the build)`)
    exit(1)
  }
  // The workspace packages export their source by default and their build under
  // the `airi-dist` condition: this is `node --conditions=airi-dist dist/<entry>.js`.
  const addDistCondition = `export function resolve(specifier, context, next) {
    return next(specifier, { ...context, conditions: [...context.conditions, 'airi-dist'] })
  }`
  register(`data:text/javascript,${encodeURIComponent(addDistCondition)}`)
  // Stack traces name the TypeScript lines (tsc writes the maps beside the build).
  setSourceMapsEnabled(true)
  await import(built.href)
}
else {
  if (!existsSync(new URL(`./src/${entry}.ts`, import.meta.url))) {
    console.error(`no entry point src/${entry}.ts`)
    exit(2)
  }
  // One bundled file, rebuilt only when a source changed (scripts/dev-bundle.mjs), run
  // with V8's code cache (scripts/run-bundle.mjs). Loaded together: each import waits on the disk.
  const [stageWeb, { bundleIfStale }, { runBundle }] = await Promise.all([
    entry === 'main' ? import('../stage-web/scripts/build-if-stale.mjs') : undefined,
    import('./scripts/dev-bundle.mjs'),
    import('./scripts/run-bundle.mjs'),
  ])
  stageWeb?.buildStageWebIfStale()
  let bundle
  try {
    bundle = bundleIfStale(entry)
  }
  catch {
    exit(1) // esbuild has printed what is wrong
  }
  await runBundle(bundle)
}
