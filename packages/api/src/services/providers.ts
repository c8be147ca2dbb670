import type { Db, JsonObject, JsonValue, SystemProviderConfig, UserProviderConfig } from '@airi/db'

import { notFound } from '../errors.ts'
import { pagesById, REDACTED, type ExportTables } from './account-export/index.ts'

/** One provider config as callers see it; `scope` says whether the operator or the caller owns it. */
export interface ProviderConfigEntry {
  scope: 'system' | 'user'
  id: string
  definitionId: string
  name: string
  config: JsonObject
  validated: boolean
  validationBypassed: boolean
  createdAt: Date
  updatedAt: Date
}

export interface CreateProviderConfigInput {
  definitionId: string
  name: string
  config: JsonObject
  validated?: boolean
  validationBypassed?: boolean
}

export interface UpdateProviderConfigInput {
  id: string
  name?: string
  /** Replaces the stored config as a whole. */
  config?: JsonObject
  validated?: boolean
  validationBypassed?: boolean
}

export type ProviderService = ReturnType<typeof createProviderService>

function toEntry(scope: ProviderConfigEntry['scope'], row: SystemProviderConfig | UserProviderConfig): ProviderConfigEntry {
  return {
    scope,
    id: row.id,
    definitionId: row.definition_id,
    name: row.name,
    config: row.config,
    validated: row.validated,
    validationBypassed: row.validation_bypassed,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  }
}

/**
 * Config fields that hold credentials, whatever the provider calls them (`apiKey`,
 * `secretAccessKey`, `accessToken`, `password`, `headers` with an Authorization…):
 * matched by name, at any depth, and never exported.
 */
const SECRET_FIELD = /key|secret|token|passw|credential|authori[sz]ation|cookie|header/i

/** `value` with every field named like a secret replaced by `[redacted]`. */
function redactSecrets(value: JsonValue): JsonValue {
  if (Array.isArray(value))
    return value.map(redactSecrets)
  if (value === null || typeof value !== 'object')
    return value
  return Object.fromEntries(Object.entries(value).map(([field, inner]) => [field, SECRET_FIELD.test(field) && inner !== null ? REDACTED : redactSecrets(inner)]))
}

// The same answer for "not yours" and "not there", so ids of other rows are not revealed.
const providerConfigNotFound = () => notFound('PROVIDER_CONFIG_NOT_FOUND', 'No such provider config')

/**
 * Provider configs: the operator's (system) rows, read-only here, and each user's
 * own rows. Reads merge both; writes touch only the caller's rows.
 */
export function createProviderService({ db }: { db: Db }) {
  return {
    /** System rows (oldest first), then the caller's own (newest first). */
    async list(userId: string): Promise<ProviderConfigEntry[]> {
      const [system, own] = await Promise.all([
        db.selectFrom('system_provider_configs').selectAll().where('deleted_at', 'is', null)
          .orderBy('created_at', 'asc').orderBy('id', 'asc').execute(),
        db.selectFrom('user_provider_configs').selectAll().where('owner_id', '=', userId).where('deleted_at', 'is', null)
          .orderBy('created_at', 'desc').orderBy('id', 'desc').execute(),
      ])
      return [...system.map(row => toEntry('system', row)), ...own.map(row => toEntry('user', row))]
    },

    async create(userId: string, input: CreateProviderConfigInput): Promise<ProviderConfigEntry> {
      const row = await db.insertInto('user_provider_configs').values({
        owner_id: userId,
        definition_id: input.definitionId,
        name: input.name,
        // node-postgres sends only plain objects as JSON; stringify so jsonb gets exactly this.
        config: JSON.stringify(input.config),
        validated: input.validated ?? false,
        validation_bypassed: input.validationBypassed ?? false,
      }).returningAll().executeTakeFirstOrThrow()
      return toEntry('user', row)
    },

    /** The caller's own row only; a system row or another user's answers 404. */
    async update(userId: string, input: UpdateProviderConfigInput): Promise<ProviderConfigEntry> {
      const row = await db.updateTable('user_provider_configs').set({
        updated_at: new Date(),
        ...(input.name !== undefined ? { name: input.name } : {}),
        ...(input.config !== undefined ? { config: JSON.stringify(input.config) } : {}),
        ...(input.validated !== undefined ? { validated: input.validated } : {}),
        ...(input.validationBypassed !== undefined ? { validation_bypassed: input.validationBypassed } : {}),
      }).where('id', '=', input.id).where('owner_id', '=', userId).where('deleted_at', 'is', null)
        .returningAll().executeTakeFirst()
      if (!row)
        throw providerConfigNotFound()
      return toEntry('user', row)
    },

    /** Soft delete of the caller's own row; anything else answers 404. */
    async delete(userId: string, id: string): Promise<{ id: string }> {
      const now = new Date()
      const row = await db.updateTable('user_provider_configs').set({ deleted_at: now, updated_at: now })
        .where('id', '=', id).where('owner_id', '=', userId).where('deleted_at', 'is', null)
        .returning('id').executeTakeFirst()
      if (!row)
        throw providerConfigNotFound()
      return { id: row.id }
    },

    /** Account export: the user's configs, deleted ones too, with every secret field redacted. */
    exportTables: (userId: string): ExportTables => ({
      user_provider_configs: pagesById(async (afterId, limit) => (await db.selectFrom('user_provider_configs').selectAll().where('owner_id', '=', userId)
        .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
        .orderBy('id').limit(limit).execute()).map(row => ({ ...row, config: redactSecrets(row.config) }))),
    }),

    /** Account deletion (priority 30), idempotent: soft-deletes the user's rows. */
    async deleteAllForUser(userId: string): Promise<void> {
      const now = new Date()
      await db.updateTable('user_provider_configs').set({ deleted_at: now, updated_at: now })
        .where('owner_id', '=', userId).where('deleted_at', 'is', null).execute()
    },
  }
}
