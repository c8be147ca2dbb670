export interface ServiceInfo {
  service: string
  version: string
}

export function createMetaService(info: ServiceInfo) {
  return {
    info: (): ServiceInfo => ({ ...info }),
  }
}
