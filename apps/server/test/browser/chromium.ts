import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import AxeBuilder from '@axe-core/playwright'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'

/** Debian's chromium package (`.ci/run` installs it). */
const CHROMIUM_PATH = '/usr/bin/chromium'

/** Where the browser tests leave screenshots of each screen (git-ignored). */
const SCREENSHOT_DIR = fileURLToPath(new URL('../../../../.artifacts/screenshots/', import.meta.url))

// Quiet, reproducible runs: no GPU, no sandbox (containers), no background traffic or updates.
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

export interface TestBrowser {
  browser: Browser
  /** A fresh context (its own cookies and storage: another device) whose page fails the test on console errors. */
  newPage: () => Promise<{ context: BrowserContext, page: Page, consoleErrors: string[] }>
  screenshot: (page: Page, name: string) => Promise<void>
  /** Full-page screenshots at 390 and 1280 px wide, light and dark: `<name>-<width>-<theme>.png`. */
  shots: (page: Page, name: string) => Promise<void>
  close: () => Promise<void>
}

/** The widths every screen is looked at: a phone and a desktop. */
const WIDTHS = [390, 1280] as const

/**
 * Fails on any serious or critical axe-core violation of the page as it is now
 * (WCAG 2.1 A/AA rules), listing each with the elements it found.
 */
export async function checkA11y(page: Page, label: string): Promise<void> {
  const { violations } = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']).analyze()
  const serious = violations.filter(violation => violation.impact === 'serious' || violation.impact === 'critical')
  const described = serious.map(violation => `${violation.id} (${violation.impact}): ${violation.help}\n${violation.nodes.slice(0, 5).map(node => `  ${node.target.join(' ')}: ${node.failureSummary ?? ''}`).join('\n')}`)
  if (described.length > 0)
    throw new Error(`axe found ${described.length} serious or critical violation(s) on ${label}:\n${described.join('\n')}`)
}

export interface LaunchOptions {
  /** Flags added to FLAGS, e.g. a fake microphone (`--use-file-for-fake-audio-capture=…`). */
  args?: string[]
}

/**
 * Another tab of `context` (the same device: shared cookies, its own sessionStorage)
 * whose console errors and Content-Security-Policy violations are collected.
 */
export async function watchedTab(context: BrowserContext): Promise<{ page: Page, consoleErrors: string[] }> {
  const page = await context.newPage()
  // A deadline, not a speed check: with the whole suite on two cores a page can take
  // well over Playwright's default 30 s to load and render (seen once, at load ~30).
  page.setDefaultTimeout(90_000)
  page.setDefaultNavigationTimeout(90_000)
  const consoleErrors: string[] = []
  page.on('console', (message) => {
    if (message.type() === 'error')
      consoleErrors.push(`${message.text()} (${message.location().url})`)
  })
  page.on('pageerror', error => consoleErrors.push(error.message))
  // Chromium logs most CSP refusals to the console; this catches the rest (e.g. report-only or in workers).
  await page.addInitScript(`document.addEventListener('securitypolicyviolation', (event) => {
    console.error('CSP violation: ' + event.violatedDirective + ' blocked ' + (event.blockedURI || 'inline') + ' (' + event.sourceFile + ':' + event.lineNumber + ')')
  })`)
  return { page, consoleErrors }
}

/** Real Chromium through playwright-core. */
export async function launchChromium({ args = [] }: LaunchOptions = {}): Promise<TestBrowser> {
  if (!existsSync(CHROMIUM_PATH))
    throw new Error(`${CHROMIUM_PATH} is missing: install Debian's chromium (apt-get install -y chromium)`)
  // launch() gives every run a fresh temporary profile (its own --user-data-dir, removed on
  // close); each newContext() is a separate device with its own cookies and storage.
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: [...FLAGS, ...args] })
  await mkdir(SCREENSHOT_DIR, { recursive: true })
  return {
    browser,
    async newPage() {
      const context = await browser.newContext()
      return { context, ...await watchedTab(context) }
    },
    async screenshot(page, name) {
      await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`), fullPage: true })
    },
    async shots(page, name) {
      const original = page.viewportSize() ?? { width: 1280, height: 720 }
      for (const width of WIDTHS) {
        await page.setViewportSize({ width, height: width < 600 ? 844 : 800 })
        for (const colorScheme of ['light', 'dark'] as const) {
          await page.emulateMedia({ colorScheme })
          // From the top, so the sticky header is drawn where it belongs; then let layout settle.
          await page.evaluate('window.scrollTo(0, 0)')
          await page.evaluate('new Promise(resolve => requestAnimationFrame(() => requestAnimationFrame(resolve)))')
          await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}-${width}-${colorScheme}.png`), fullPage: true })
        }
      }
      await page.emulateMedia({ colorScheme: 'light' })
      await page.setViewportSize(original)
    },
    async close() {
      await browser.close()
    },
  }
}
