/**
 * A small, strict XML 1.0 parser for the fakes: it checks well-formedness the way
 * a real service's parser does (one root, matching tags, quoted and unique
 * attributes, no bare `<` or `&`, only the five predefined entities and character
 * references, only legal characters) and gives back the element tree with
 * references resolved. A document type declaration is refused (SSML needs none,
 * and entity definitions are how XML bombs are built). No validation beyond that.
 */

export interface XmlElement {
  name: string
  attributes: Record<string, string>
  children: XmlNode[]
}

export type XmlNode = XmlElement | string

export class XmlError extends Error {
  override readonly name = 'XmlError'

  constructor(message: string, readonly offset: number) {
    super(`${message} (at offset ${offset})`)
  }
}

const NAME_START = ':A-Z_a-z\\u00C0-\\u00D6\\u00D8-\\u00F6\\u00F8-\\u02FF\\u0370-\\u037D\\u037F-\\u1FFF\\u200C-\\u200D\\u2070-\\u218F\\u2C00-\\u2FEF\\u3001-\\uD7FF\\uF900-\\uFDCF\\uFDF0-\\uFFFD\\u{10000}-\\u{EFFFF}'
// eslint-disable-next-line no-misleading-character-class -- XML's NameChar includes the combining marks (U+0300–U+036F) on purpose
const NAME = new RegExp(`[${NAME_START}][${NAME_START}\\-.0-9\\u00B7\\u0300-\\u036F\\u203F-\\u2040]*`, 'uy')
const ILLEGAL_CHAR = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u
const PREDEFINED: Record<string, string> = { lt: '<', gt: '>', amp: '&', apos: '\'', quot: '"' }

function isLegalCodePoint(code: number): boolean {
  return code === 0x9 || code === 0xA || code === 0xD || (code >= 0x20 && code <= 0xD7FF) || (code >= 0xE000 && code <= 0xFFFD) || (code >= 0x10000 && code <= 0x10FFFF)
}

/** Parses a whole document; throws `XmlError` on the first thing that is not well-formed XML. */
export function parseXml(input: string): XmlElement {
  // XML reads every line ending as \n.
  const source = input.replace(/\r\n?/g, '\n')
  const illegal = ILLEGAL_CHAR.exec(source)
  if (illegal)
    throw new XmlError(`illegal character U+${illegal[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`, illegal.index)
  let at = 0

  const fail = (message: string): never => {
    throw new XmlError(message, at)
  }
  const startsWith = (text: string) => source.startsWith(text, at)
  const skipSpace = (): boolean => {
    const start = at
    while (at < source.length && ' \t\n'.includes(source[at]!))
      at++
    return at > start
  }
  const expect = (text: string) => {
    if (!startsWith(text))
      fail(`expected ${JSON.stringify(text)}`)
    at += text.length
  }
  const name = (): string => {
    NAME.lastIndex = at
    const match = NAME.exec(source)
    if (!match)
      fail('expected a name')
    at += match![0].length
    return match![0]
  }
  const until = (end: string, what: string): string => {
    const index = source.indexOf(end, at)
    if (index < 0)
      fail(`unterminated ${what}`)
    const text = source.slice(at, index)
    at = index + end.length
    return text
  }

  const reference = (): string => {
    expect('&')
    if (startsWith('#')) {
      at++
      const hex = startsWith('x')
      if (hex)
        at++
      const digits = /^[0-9a-fA-F]+/.exec(source.slice(at, at + 12))?.[0] ?? ''
      if (!digits || (!hex && !/^\d+$/.test(digits)))
        fail('malformed character reference')
      at += digits.length
      expect(';')
      const code = Number.parseInt(digits, hex ? 16 : 10)
      if (!isLegalCodePoint(code))
        fail('character reference to an illegal character')
      return String.fromCodePoint(code)
    }
    const entity = name()
    expect(';')
    if (!Object.hasOwn(PREDEFINED, entity))
      fail(`undefined entity &${entity};`)
    return PREDEFINED[entity]!
  }

  const comment = () => {
    expect('<!--')
    const text = until('-->', 'comment')
    if (text.includes('--') || text.endsWith('-'))
      fail('"--" inside a comment')
  }

  const processingInstruction = () => {
    expect('<?')
    const target = name()
    if (target.toLowerCase() === 'xml')
      fail('XML declaration not at the start of the document')
    if (!startsWith('?>') && !skipSpace())
      fail('expected space after the processing instruction target')
    until('?>', 'processing instruction')
  }

  const misc = () => {
    for (;;) {
      if (skipSpace())
        continue
      if (startsWith('<!--'))
        comment()
      else if (startsWith('<?'))
        processingInstruction()
      else
        return
    }
  }

  const attributeValue = (): string => {
    const quote = source[at]
    if (quote !== '"' && quote !== '\'')
      fail('attribute value must be quoted')
    at++
    let value = ''
    for (;;) {
      if (at >= source.length)
        fail('unterminated attribute value')
      const char = source[at]!
      if (char === quote) {
        at++
        return value
      }
      if (char === '<')
        fail('"<" in an attribute value')
      if (char === '&') {
        value += reference()
        continue
      }
      // Attribute-value normalisation: literal whitespace becomes a space.
      value += char === '\t' || char === '\n' ? ' ' : char
      at++
    }
  }

  const element = (): XmlElement => {
    expect('<')
    const tag = name()
    const attributes: Record<string, string> = {}
    for (;;) {
      const spaced = skipSpace()
      if (startsWith('/>')) {
        at += 2
        return { name: tag, attributes, children: [] }
      }
      if (startsWith('>')) {
        at++
        break
      }
      if (!spaced)
        fail('expected space between attributes')
      const attribute = name()
      skipSpace()
      expect('=')
      skipSpace()
      if (Object.hasOwn(attributes, attribute))
        fail(`duplicate attribute ${attribute}`)
      attributes[attribute] = attributeValue()
    }

    const children: XmlNode[] = []
    let text = ''
    const flush = () => {
      if (text)
        children.push(text)
      text = ''
    }
    for (;;) {
      if (at >= source.length)
        fail(`unclosed element <${tag}>`)
      if (startsWith('</')) {
        at += 2
        const closing = name()
        if (closing !== tag)
          fail(`</${closing}> closes <${tag}>`)
        skipSpace()
        expect('>')
        flush()
        return { name: tag, attributes, children }
      }
      if (startsWith('<!--')) {
        comment()
      }
      else if (startsWith('<![CDATA[')) {
        at += '<![CDATA['.length
        text += until(']]>', 'CDATA section')
      }
      else if (startsWith('<?')) {
        processingInstruction()
      }
      else if (startsWith('<')) {
        flush()
        children.push(element())
      }
      else if (startsWith('&')) {
        text += reference()
      }
      else {
        if (startsWith(']]>'))
          fail('"]]>" in character data')
        text += source[at]
        at++
      }
    }
  }

  if (startsWith('<?xml') && /^<\?xml[ \t\n]/.test(source.slice(0, 6))) {
    const declaration = until('?>', 'XML declaration')
    if (!/^<\?xml\s+version\s*=\s*(["'])1\.[0-9]+\1(\s+encoding\s*=\s*(["'])[A-Za-z][\w.-]*\3)?(\s+standalone\s*=\s*(["'])(yes|no)\5)?\s*$/.test(`${declaration}`))
      fail('malformed XML declaration')
  }
  misc()
  if (startsWith('<!DOCTYPE'))
    fail('a document type declaration is not accepted')
  if (!startsWith('<') || startsWith('</'))
    fail('expected the root element')
  const root = element()
  misc()
  if (at < source.length)
    fail('content after the root element')
  return root
}

/** The text inside `node`, its descendants' included, in document order. */
export function textOf(node: XmlNode): string {
  return typeof node === 'string' ? node : node.children.map(textOf).join('')
}

/** Every element named `name` at or under `root`, in document order. */
export function findElements(root: XmlElement, name: string): XmlElement[] {
  const found = root.name === name ? [root] : []
  for (const child of root.children) {
    if (typeof child !== 'string')
      found.push(...findElements(child, name))
  }
  return found
}
