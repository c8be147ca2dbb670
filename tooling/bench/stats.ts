/** Statistics over a bench's samples: nearest-rank percentiles, medians and spreads of rounds, ratios. */

/** Nearest-rank percentile (p in 0–100) of `values`; NaN for no values. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0)
    return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!
}

/** The middle value (the mean of the two middle ones for an even count); NaN for none. */
export function median(values: readonly number[]): number {
  if (values.length === 0)
    return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

/** Median of the rounds and their spread (max − min), so a reader sees how much rounds disagreed. */
export interface Summary {
  median: number
  min: number
  max: number
  rounds: number[]
}

export function summarize(rounds: readonly number[]): Summary {
  const finite = rounds.filter(Number.isFinite)
  return {
    median: median(finite),
    min: finite.length ? Math.min(...finite) : Number.NaN,
    max: finite.length ? Math.max(...finite) : Number.NaN,
    rounds: [...rounds],
  }
}

/** ours / baseline; NaN when either is missing or the baseline is 0. */
export function ratio(ours: number, baseline: number): number {
  if (!Number.isFinite(ours) || !Number.isFinite(baseline) || baseline === 0)
    return Number.NaN
  return ours / baseline
}

/**
 * Latency added by a path, per percentile: the percentile of ours minus the same
 * percentile of the baseline (not the percentile of pairwise differences, which
 * mixes unrelated requests' jitter).
 */
export function added(ours: readonly number[], baseline: readonly number[], p: number): number {
  return percentile(ours, p) - percentile(baseline, p)
}

/** A number for the table: 3 significant digits, thousands kept whole. */
/** A difference with its sign: `+1.20`, `-8.43` (never `+-`). */
export function formatSigned(value: number): string {
  return `${value >= 0 ? '+' : ''}${formatNumber(value)}`
}

export function formatNumber(value: number): string {
  if (!Number.isFinite(value))
    return 'n/a'
  const magnitude = Math.abs(value)
  if (magnitude >= 1000)
    return Math.round(value).toLocaleString('en-US')
  if (magnitude >= 100)
    return value.toFixed(0)
  if (magnitude >= 10)
    return value.toFixed(1)
  return value.toFixed(2)
}

/** `median (min–max)` of a summary, with a unit. */
export function formatSummary(summary: Summary, unit: string): string {
  if (!Number.isFinite(summary.median))
    return 'n/a'
  const spread = summary.rounds.length > 1 ? ` (${formatNumber(summary.min)}–${formatNumber(summary.max)})` : ''
  return `${formatNumber(summary.median)} ${unit}${spread}`
}

/** A small seeded generator (mulberry32) in [0, 1): the same seed gives the same run every time. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6D2B79F5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
}
