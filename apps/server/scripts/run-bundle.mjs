// Runs a bundle from dev-bundle.mjs: a script holding one async function, the entry's
// body. V8's code cache of the script, written beside it after its first run, spares
// later starts compiling the bundle again (and the functions that start-up ran).
import { closeSync, fstatSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { createRequire, SourceMap } from 'node:module'
import { dirname, resolve } from 'node:path'
import { Script } from 'node:vm'

/** Runs the bundle at `path`; resolves when the entry's body has run to its end. */
export async function runBundle(path) {
  const { source, identity } = readBundle(path)
  const cacheFile = `${path}.cache`
  const cachedData = readCache(cacheFile, identity)
  const script = new Script(source, { filename: path, cachedData })
  mapStackTraces(path)
  await script.runInThisContext()(createRequire(path), specifier => import(specifier))
  // After the run, so the cache holds the functions start-up compiled too.
  if (!cachedData || script.cachedDataRejected)
    writeAtomically(cacheFile, Buffer.concat([Buffer.from(`${identity}\n`), script.createCachedData()]))
}

/**
 * The bundle's text and what tells this file from the next build's: V8 checks a cache
 * against the source's length only, and a rebuild renames a new file into place.
 */
function readBundle(path) {
  const fd = openSync(path, 'r')
  try {
    const { ino, size, mtimeNs } = fstatSync(fd, { bigint: true })
    // dev-bundle.mjs escapes everything outside ASCII, so latin1 reads it as it is.
    return { source: readFileSync(fd, 'latin1'), identity: `${ino}:${size}:${mtimeNs}` }
  }
  finally {
    closeSync(fd)
  }
}

function readCache(cacheFile, identity) {
  let stored
  try {
    stored = readFileSync(cacheFile)
  }
  catch {
    return undefined
  }
  const end = stored.indexOf(10)
  return end > 0 && stored.subarray(0, end).toString() === identity ? stored.subarray(end + 1) : undefined
}

function writeAtomically(path, contents) {
  const temporary = `${path}.${process.pid}.tmp`
  writeFileSync(temporary, contents)
  renameSync(temporary, path)
}

/**
 * Node maps stack traces of modules only (setSourceMapsEnabled), not of a vm script:
 * frames in the bundle are mapped here, the map read on the first stack that needs it.
 */
function mapStackTraces(bundle) {
  let map
  const located = (frame) => {
    const text = String(frame)
    if (frame.getFileName() !== bundle)
      return text
    map ??= readMap(`${bundle}.map`)
    const line = frame.getLineNumber()
    const column = frame.getColumnNumber()
    const entry = map.findEntry(line - 1, column - 1)
    // The nearest segment may sit on an earlier line, in a package's code.
    if (!entry.originalSource || entry.generatedLine !== line - 1)
      return text
    return text.replace(`${bundle}:${line}:${column}`, `${entry.originalSource}:${entry.originalLine + 1}:${entry.originalColumn + 1}`)
  }
  Error.prepareStackTrace = (error, frames) => [describe(error), ...frames.map(frame => `    at ${located(frame)}`)].join('\n')
}

function readMap(file) {
  const payload = JSON.parse(readFileSync(file, 'utf8'))
  return new SourceMap({ ...payload, sources: payload.sources.map(source => resolve(dirname(file), source)) })
}

/** The first line of a stack, as V8 writes it. */
function describe(error) {
  try {
    return Error.prototype.toString.call(error)
  }
  catch {
    return '<error>'
  }
}
