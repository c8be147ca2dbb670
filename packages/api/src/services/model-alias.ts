import { ApiError } from '../errors.ts'

/** The 404 for a model that is not configured; `kind` says which ("model", "speech model", …). */
export function modelNotFound(kind: string, requested: string | undefined): ApiError {
  return new ApiError(404, 'MODEL_NOT_FOUND', `The ${kind} ${JSON.stringify(requested ?? '')} does not exist`, { param: 'model' })
}

/**
 * The entry of `catalogue` (LLM_ROUTER_CONFIG, TTS_UPSTREAMS) that `requested` names,
 * or the default when it names none; looked up as the catalogue's own key only
 * (`constructor` is no model).
 */
export function resolveAlias<Entry>(catalogue: { defaultModel?: string, models: Record<string, Entry> }, requested: string | undefined, kind = 'model'): { alias: string, entry: Entry } {
  const alias = requested || catalogue.defaultModel
  const entry = alias && Object.hasOwn(catalogue.models, alias) ? catalogue.models[alias] : undefined
  if (!alias || !entry)
    throw modelNotFound(kind, requested)
  return { alias, entry }
}
