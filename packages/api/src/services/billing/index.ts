// The billing domain: the Flux ledger (the one writer of balances), meters for sub-Flux
// usage, holds that make a meter's check safe under concurrency, and one-off grants.
export { createBillingService, writeCompanionAlone, type Alongside, type BillingService, type CompanionKind } from './ledger.ts'
export { createFluxMeterFactory, type FluxMeter, type MeteredCall, type MeterKey, type MeterRuntime, sessionUsageStatus, type UsageLog } from './meter.ts'
export { createMeterHolds, type MeterHold, type MeterHolds } from './holds.ts'
export { createFluxGrantService, type FluxGrantService } from './grants.ts'
