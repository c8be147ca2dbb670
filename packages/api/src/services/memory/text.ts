// The text side of memory search, pure so both ends use the very same splitting:
// the service indexes `searchText(content)` and queries with `tsQuery(query)`, each
// through Postgres's `simple` configuration (no stemming, no language of its own).

/** A run of Chinese, Japanese or Korean script, which has no spaces between words (or, in Korean, words too long to match whole). */
const CJK_RUN = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}]+/gu

/** A word of any other script: letters (with their combining marks) and digits; apostrophes split, as Postgres's parser does. */
const WORD = /[\p{L}\p{M}\p{N}]+/gu

/** Words a question carries whatever it asks, which would match nearly every memory. */
const STOPWORDS = new Set([
  'a', 'about', 'am', 'an', 'and', 'are', 'as', 'at', 'be', 'but', 'by', 'can', 'did', 'do', 'does', 'for', 'from', 'had', 'has', 'have',
  'he', 'her', 'his', 'how', 'i', 'if', 'in', 'is', 'it', 'its', 'me', 'mine', 'my', 'of', 'on', 'or', 'our', 'she', 'so', 'that', 'the',
  'their', 'them', 'they', 'this', 'to', 'was', 'we', 'were', 'what', 'when', 'where', 'which', 'who', 'why', 'will', 'with', 'you', 'your',
])

/** At most this many terms go into one query; a longer message is cut, not refused. */
export const MAX_QUERY_TERMS = 64

/** The character bigrams of one CJK run; a one-character run is itself. */
function bigrams(run: string): string[] {
  const chars = [...run]
  if (chars.length < 2)
    return chars
  return chars.slice(1).map((char, index) => chars[index]! + char)
}

/**
 * The text's tokens for comparing two memories (extraction's duplicate check): its
 * words outside CJK runs, and the bigrams of each CJK run, the same splitting as search.
 */
export function textTokens(text: string): string[] {
  return [
    ...(text.replace(CJK_RUN, ' ').match(WORD) ?? []),
    ...[...text.matchAll(CJK_RUN)].flatMap(match => bigrams(match[0])),
  ]
}

/**
 * What `to_tsvector('simple', …)` indexes for a memory: the content as written (its
 * words), then the bigrams of each CJK run, so "我住在上海" is found by "上海".
 */
export function searchText(content: string): string {
  const grams = [...content.matchAll(CJK_RUN)].flatMap(match => bigrams(match[0]))
  return grams.length === 0 ? content : `${content} ${grams.join(' ')}`
}

/**
 * The terms of a query, unique, in order: lower-cased words of two or more
 * characters that are not stopwords, and the bigrams of each CJK run (a lone CJK
 * character stays one term).
 */
export function queryTerms(query: string): string[] {
  const words = query.replace(CJK_RUN, ' ').toLowerCase().match(WORD) ?? []
  const terms = [
    ...words.filter(word => [...word].length >= 2 && !STOPWORDS.has(word)),
    ...[...query.matchAll(CJK_RUN)].flatMap(match => bigrams(match[0])),
  ]
  return [...new Set(terms)].slice(0, MAX_QUERY_TERMS)
}

/**
 * The `to_tsquery('simple', …)` text of a query: any term matches (`|`); a lone CJK
 * character as a prefix, so it meets the bigrams that start with it. Null when the
 * query has no term. Terms are letters and digits only, so quoting them is safe.
 */
export function tsQuery(query: string): string | null {
  const terms = queryTerms(query)
  if (terms.length === 0)
    return null
  return terms.map(term => (/^\p{Script=Han}$|^\p{Script=Hiragana}$|^\p{Script=Katakana}$|^\p{Script=Hangul}$/u.test(term) ? `'${term}':*` : `'${term}'`)).join(' | ')
}
