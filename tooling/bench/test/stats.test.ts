import { describe, expect, it } from 'vitest'

import { added, formatNumber, formatSigned, formatSummary, median, percentile, ratio, summarize } from '../stats.ts'

describe('bench statistics', () => {
  it('takes nearest-rank percentiles', () => {
    const values = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6]
    expect(percentile(values, 50)).toBe(5)
    expect(percentile(values, 90)).toBe(9)
    expect(percentile(values, 99)).toBe(10)
    expect(percentile(values, 100)).toBe(10)
    expect(percentile(values, 0)).toBe(1)
    expect(percentile([42], 99)).toBe(42)
    expect(percentile([], 50)).toBeNaN()
  })

  it('takes medians of odd and even counts without reordering the input', () => {
    const values = [3, 1, 2]
    expect(median(values)).toBe(2)
    expect(values).toEqual([3, 1, 2])
    expect(median([4, 1, 3, 2])).toBe(2.5)
    expect(median([])).toBeNaN()
  })

  it('summarizes rounds as median and spread, ignoring failed rounds', () => {
    expect(summarize([10, Number.NaN, 30, 20])).toMatchObject({ median: 20, min: 10, max: 30 })
    expect(formatSummary(summarize([10, 30, 20]), 'ms')).toBe('20.0 ms (10.0–30.0)')
    expect(formatSummary(summarize([1234]), 'req/s')).toBe('1,234 req/s')
    expect(formatSummary(summarize([]), 'ms')).toBe('n/a')
  })

  it('divides ours by the baseline, and has no ratio without a baseline', () => {
    expect(ratio(600, 1000)).toBe(0.6)
    expect(ratio(1, 0)).toBeNaN()
    expect(ratio(Number.NaN, 5)).toBeNaN()
  })

  it('measures added latency percentile by percentile', () => {
    const baseline = [1, 1, 1, 1, 2]
    const ours = [3, 3, 3, 3, 10]
    expect(added(ours, baseline, 50)).toBe(2)
    expect(added(ours, baseline, 99)).toBe(8)
  })

  it('formats numbers to about three significant digits', () => {
    expect(formatNumber(29_000.4)).toBe('29,000')
    expect(formatNumber(123.4)).toBe('123')
    expect(formatNumber(12.34)).toBe('12.3')
    expect(formatNumber(0.456)).toBe('0.46')
    expect(formatNumber(Number.NaN)).toBe('n/a')
  })

  it('signs differences once', () => {
    expect(formatSigned(1.2)).toBe('+1.20')
    expect(formatSigned(-8.43)).toBe('-8.43')
    expect(formatSigned(0)).toBe('+0.00')
  })
})
