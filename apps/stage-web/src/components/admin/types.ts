import type { client } from '../../client.ts'

// The shapes of the admin procedures, as the router declares them (inferred, never restated).
export type UpstreamList = Awaited<ReturnType<typeof client.admin.upstreams.list.query>>
export type UpstreamKind = UpstreamList['kind']
export type AliasView = UpstreamList['models'][number]
export type UpstreamPut = Parameters<typeof client.admin.upstreams.put.mutate>[0]
export type ConfigEntry = Awaited<ReturnType<typeof client.admin.config.list.query>>[number]
export type GrantOutcome = Awaited<ReturnType<typeof client.admin.flux.grant.mutate>>
export type UserLookup = Awaited<ReturnType<typeof client.admin.users.lookup.query>>
/** A config value as `admin.config.set` takes it (any JSON). */
export type ConfigInput = Parameters<typeof client.admin.config.set.mutate>[0]['value']
