import { TRPCError } from '@trpc/server'
import superjson from 'superjson'

/**
 * The shape of a call's input, checked before any schema sees it: schemas (and
 * JSON.stringify, and Postgres) recurse, so a reference loop or a 100 000-deep
 * nesting must be refused first, with a plain message instead of a stack overflow.
 */

/** How deep one call's input may nest (JSON fields inside it are limited further by their schema). */
const MAX_INPUT_DEPTH = 64
/** How many values (objects, arrays and leaves, counting a shared one each time it is reached) one input may hold. */
const MAX_INPUT_VALUES = 100_000

/** Keys that reach Object.prototype when a parser or a merge treats them as ordinary. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype'])

/** Carries the refusal to the error formatter; `issues` (when the place is known) becomes `fieldErrors`. */
export class InputRefusedError extends Error {
  override readonly name = 'InputRefusedError'
  readonly issues: Array<{ path: PropertyKey[], message: string }>

  constructor(message: string, path?: PropertyKey[]) {
    super(message)
    this.issues = [{ path: path ?? [], message }]
  }
}

interface Frame {
  value: unknown
  depth: number
  parent?: Frame
  key?: PropertyKey
}

function pathOf(frame: Frame): PropertyKey[] {
  const path: PropertyKey[] = []
  for (let at: Frame | undefined = frame; at?.parent; at = at.parent)
    path.unshift(at.key!)
  return path
}

function isPlainObject(value: object): value is Record<string, unknown> {
  const prototype = Object.getPrototypeOf(value) as unknown
  return prototype === Object.prototype || prototype === null
}

/** The children of a container the transformer can produce (arrays, plain objects, Maps, Sets); none for other values. */
function childrenOf(value: object): Array<[PropertyKey, unknown]> {
  if (Array.isArray(value))
    return value.map((child, index) => [index, child])
  if (value instanceof Map)
    return [...value].flatMap(([key, child], index) => [[index, key], [index, child]] as Array<[PropertyKey, unknown]>)
  if (value instanceof Set)
    return [...value].map((child, index) => [index, child])
  return isPlainObject(value) ? Object.entries(value) : []
}

/**
 * Why `input` cannot be accepted, or undefined. Walks without recursion, stops at
 * the limits, and tracks the objects on the current path to tell a loop apart.
 */
export function findInputProblem(input: unknown): InputRefusedError | undefined {
  const stack: Array<Frame | { leave: object }> = [{ value: input, depth: 0 }]
  const onPath = new Set<object>()
  let seen = 0
  while (stack.length > 0) {
    const frame = stack.pop()!
    if ('leave' in frame) {
      onPath.delete(frame.leave)
      continue
    }
    if (++seen > MAX_INPUT_VALUES)
      return new InputRefusedError(`Input holds more than ${MAX_INPUT_VALUES} values`)
    const { value, depth } = frame
    if (typeof value !== 'object' || value === null)
      continue
    if (onPath.has(value))
      return new InputRefusedError('Input must not contain a reference loop', pathOf(frame))
    if (depth >= MAX_INPUT_DEPTH)
      return new InputRefusedError(`Input is nested too deeply (at most ${MAX_INPUT_DEPTH} levels)`)
    onPath.add(value)
    stack.push({ leave: value })
    const children = childrenOf(value)
    for (const [key] of children) {
      if (typeof key === 'string' && FORBIDDEN_KEYS.has(key))
        return new InputRefusedError(`"${key}" is not allowed as a key`, [...pathOf(frame), key])
    }
    // Reversed onto the stack, so problems are found in reading order: superjson's `json` before its `meta`.
    for (const [key, child] of children.reverse())
      stack.push({ value: child, depth: depth + 1, parent: frame, key })
  }
  return undefined
}

/** The place in the data, for a problem found in superjson's `{ json, meta }` envelope. */
function dataPath(error: InputRefusedError): InputRefusedError {
  const [issue] = error.issues
  if (issue?.path[0] === 'json')
    return new InputRefusedError(error.message, issue.path.slice(1))
  return new InputRefusedError(error.message)
}

/**
 * A rejected promise as the call's input: tRPC awaits the input when the procedure
 * reads it, so only this call fails, with 400, over HTTP and WebSocket alike.
 * (Throwing here instead would fail a WebSocket message without its call id,
 * leaving the client waiting.)
 */
function refuse(error: InputRefusedError): Promise<never> {
  const refused = Promise.reject(new TRPCError({ code: 'BAD_REQUEST', message: error.message, cause: error }))
  // Procedures without input never read it; that must not be an unhandled rejection.
  refused.catch(() => {})
  return refused
}

function deserialize(raw: unknown): unknown {
  const rawProblem = findInputProblem(raw)
  if (rawProblem)
    return refuse(dataPath(rawProblem))
  let input: unknown
  try {
    input = superjson.deserialize(raw as Parameters<typeof superjson.deserialize>[0])
  }
  catch {
    return refuse(new InputRefusedError('Input is not in the expected format'))
  }
  // superjson's references can turn a harmless tree into a loop or a huge graph.
  const problem = findInputProblem(input)
  return problem ? refuse(problem) : input
}

type Serialized = ReturnType<typeof superjson.serialize>
type Meta = Serialized['meta']

/**
 * Outputs marked by `markShared`, with their serialization once made: `direct`
 * as sent alone, `trackedMeta` its meta inside a tracked event's `{ id, data }`
 * (null when that cannot be derived, e.g. superjson recorded shared references).
 */
const shared = new WeakMap<object, { direct: Serialized, trackedMeta: Meta | null } | undefined>()

/**
 * Declares that `value` will not change from now on, so every subscription that
 * sends it can share one serialization: live sync hands one event object to a
 * thousand sockets, and superjson's walk over it was the largest part of each
 * delivery's CPU time (docs/performance.md, fan-out). Returns `value`.
 */
export function markShared<T extends object>(value: T): T {
  if (!shared.has(value))
    shared.set(value, undefined)
  return value
}

function serializedShared(value: object) {
  let entry = shared.get(value)
  if (!entry) {
    const direct = superjson.serialize(value as Parameters<typeof superjson.serialize>[0])
    const values = direct.meta?.values
    // Inside `{ id, data }` every annotated path starts with `data.`; a root annotation or a reference list would need more than that.
    const derivable = !direct.meta?.referentialEqualities && (values === undefined || !Array.isArray(values))
    const trackedMeta = !derivable
      ? null
      : direct.meta && { ...direct.meta, values: Object.fromEntries(Object.entries(values ?? {}).map(([path, tree]) => [`data.${path}`, tree])) }
    entry = { direct, trackedMeta }
    shared.set(value, entry)
  }
  return entry
}

/** tRPC's WebSocket adapter wraps each tracked event in a new `{ id, data }` per subscription. */
function isTrackedWrapper(value: object): value is { id: string, data: object } {
  const { id, data } = value as { id?: unknown, data?: unknown }
  return typeof id === 'string' && typeof data === 'object' && data !== null && Object.keys(value).length === 2
}

/** Values that are plain JSON already, marked by `sentAsPlainJson`. */
const plainJson = new WeakSet<object>()

/**
 * Marks an error shape's `data.fieldErrors` (strings to string lists) to be sent as
 * it is: its keys are the client's paths, and superjson throws on a key such as
 * `prototype`, which turned the 400 refusing that key into a 500. Returns `value`.
 */
export function sentAsPlainJson<T extends object>(value: T): T {
  plainJson.add(value)
  return value
}

/** An error shape with marked field errors: superjson for the rest, the field errors put back as they are. */
function serializeErrorShape(value: object): Serialized | undefined {
  const { data } = value as { data?: { fieldErrors?: object } | null }
  // WeakSet.has is false for anything that is not an object, so no type checks first.
  if (!plainJson.has(data?.fieldErrors as object))
    return undefined
  const { fieldErrors, ...rest } = data!
  const serialized = superjson.serialize({ ...value, data: rest })
  ;(serialized.json as { data: Record<string, unknown> }).data.fieldErrors = fieldErrors
  return serialized
}

/** superjson, except that a shared output (alone or as a tracked event's data) is walked once, not once per subscription. */
function serializeOutput(value: unknown): Serialized {
  if (typeof value === 'object' && value !== null) {
    const errorShape = serializeErrorShape(value)
    if (errorShape)
      return errorShape
    if (shared.has(value))
      return serializedShared(value).direct
    if (isTrackedWrapper(value) && shared.has(value.data)) {
      const { direct, trackedMeta } = serializedShared(value.data)
      if (trackedMeta !== null) {
        const json = { id: value.id, data: direct.json } as Serialized['json']
        return trackedMeta ? { json, meta: trackedMeta } : { json }
      }
    }
  }
  return superjson.serialize(value as Parameters<typeof superjson.serialize>[0])
}

/** superjson both ways, with every input checked by `findInputProblem` as it is read, and shared outputs serialized once. */
export const guardedTransformer = {
  input: { serialize: (value: unknown) => superjson.serialize(value as Parameters<typeof superjson.serialize>[0]), deserialize },
  output: { serialize: serializeOutput, deserialize: (value: unknown) => superjson.deserialize(value as Serialized) },
}
