import { describe, expect, it } from 'vitest'

import { MAX_QUERY_TERMS, queryTerms, searchText, tsQuery } from './text.ts'

describe('searchText', () => {
  it('leaves text without CJK as it is', () => {
    expect(searchText('My cat is called Miso')).toBe('My cat is called Miso')
  })

  it('adds the bigrams of each Chinese run', () => {
    expect(searchText('我住在上海')).toBe('我住在上海 我住 住在 在上 上海')
  })

  it('splits runs at punctuation and other scripts, and keeps a lone character', () => {
    expect(searchText('我爱Miso，猫。')).toBe('我爱Miso，猫。 我爱 猫')
  })

  it('covers Japanese and Korean scripts too', () => {
    expect(searchText('ねこ 고양이')).toBe('ねこ 고양이 ねこ 고양 양이')
  })
})

describe('queryTerms', () => {
  it('keeps the English words that carry meaning, lower-cased, split at apostrophes', () => {
    expect(queryTerms('What is my cat\'s NAME?')).toEqual(['cat', 'name'])
  })

  it('turns a Chinese question into bigrams', () => {
    expect(queryTerms('上海的天气')).toEqual(['上海', '海的', '的天', '天气'])
  })

  it('takes both from mixed text, each once', () => {
    expect(queryTerms('Miso 喜欢吃火锅 miso')).toEqual(['miso', '喜欢', '欢吃', '吃火', '火锅'])
  })

  it('has nothing for punctuation and stopwords only', () => {
    expect(queryTerms('... is it? ！')).toEqual([])
    expect(tsQuery('is it?')).toBeNull()
  })

  it('stops at the most terms a query may have', () => {
    const words = Array.from({ length: 100 }, (_, index) => `word${index}`).join(' ')
    expect(queryTerms(words)).toHaveLength(MAX_QUERY_TERMS)
  })
})

describe('tsQuery', () => {
  it('joins quoted terms with OR, a lone CJK character as a prefix', () => {
    expect(tsQuery('cat 猫')).toBe(`'cat' | '猫':*`)
    expect(tsQuery('上海')).toBe(`'上海'`)
  })
})
