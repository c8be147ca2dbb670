import type { ConfigService } from './config.ts'
import type { createMetaService } from './meta.ts'

/** Every domain service, as composed by `createApi`. */
export interface Services {
  config: ConfigService
  meta: ReturnType<typeof createMetaService>
}
