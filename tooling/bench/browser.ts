// Chromium (Debian's) driven by playwright-core for the bench: a load's first
// contentful paint, and the JavaScript a first load fetches. See docs/performance.md
// ("stage-web budget").
import { gzipSync } from 'node:zlib'

import { chromium, type Browser, type BrowserContext, type Request } from 'playwright-core'

import { REQUEST_DEADLINE_MS } from './context.ts'
import { onCleanup, until } from './infra.ts'

export type { Browser }

export type StorageState = Awaited<ReturnType<BrowserContext['storageState']>>

/** Debian's chromium package, as in the browser tests (apps/server/test/browser/chromium.ts, whose flags these are). */
const CHROMIUM_PATH = '/usr/bin/chromium'
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
/** How long nothing may be in flight for a load to count as finished (Playwright's `networkidle`). */
const IDLE_MS = 500
/** Quiet long enough that a page not painted by then is broken, not slow (a loaded machine can run script for seconds). */
const BLANK_AFTER_MS = 5000

/**
 * In every document of a load: the first document's time origin is kept in
 * sessionStorage, so a load that goes through more than one document (a
 * client-side redirect such as a silent sign-in) is timed from its start. For a
 * single document this is exactly the browser's own `first-contentful-paint`.
 */
const PAINT_SCRIPT = `(() => {
  if (window !== window.top) return
  let start
  try {
    start = Number(sessionStorage.getItem('bench-load-start')) || performance.timeOrigin
    sessionStorage.setItem('bench-load-start', String(start))
  } catch { return }
  new PerformanceObserver((list, observer) => {
    const entry = list.getEntriesByName('first-contentful-paint')[0]
    if (!entry) return
    observer.disconnect()
    window.benchPainted(performance.timeOrigin + entry.startTime - start)
  }).observe({ type: 'paint', buffered: true })
})()`

/**
 * Chromium with the browser tests' flags; `close` is also the bench's cleanup (Ctrl-C,
 * a failure). Playwright kills the browser when this process exits, whatever happens.
 */
export async function launchChromium(): Promise<{ browser: Browser, close: () => Promise<void> }> {
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: FLAGS, handleSIGINT: false, handleSIGTERM: false })
  const close = () => answered(browser.close(), 'closing the browser')
  onCleanup(close)
  return { browser, close }
}

/**
 * A browser call that must settle: under heavy load Chromium has been seen to stop
 * answering (a newContext pending for 16 minutes), and a run must not hang on it.
 */
function answered<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const stalled = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`Chromium did not answer ${what} within ${REQUEST_DEADLINE_MS} ms`)), REQUEST_DEADLINE_MS)
  })
  return Promise.race([promise, stalled]).finally(() => clearTimeout(timer))
}

/** `work` in a fresh context (its own cookies, storage and cache: a first visit), closed afterwards. */
async function inContext<T>(browser: Browser, options: { storageState?: StorageState }, work: (context: BrowserContext) => Promise<T>): Promise<T> {
  const context = await answered(browser.newContext(options), 'newContext')
  try {
    return await work(context)
  }
  finally {
    await answered(context.close(), 'closing a context')
  }
}

/**
 * When a context's network has been idle for IDLE_MS (a socket is no request; an
 * event stream never ends, so it is left out), and what failed on the way.
 */
function trackNetwork(context: BrowserContext) {
  const inflight = new Set<Request>()
  const failed: string[] = []
  let lastActivity = Date.now()
  const settle = (request: Request) => {
    inflight.delete(request)
    lastActivity = Date.now()
  }
  context.on('request', (request) => {
    inflight.add(request)
    lastActivity = Date.now()
  })
  context.on('requestfinished', settle)
  context.on('requestfailed', (request) => {
    failed.push(`${request.url()} (${request.failure()?.errorText ?? 'failed'})`)
    settle(request)
  })
  context.on('response', (response) => {
    if (response.status() >= 400)
      failed.push(`${response.url()} (${response.status()})`)
  })
  return {
    idle: (quietMs = IDLE_MS) => [...inflight].every(request => request.resourceType() === 'eventsource') && Date.now() - lastActivity >= quietMs,
    failed,
  }
}

/** Milliseconds from the start of a load of `url` in a fresh context to its first contentful paint. */
export async function firstPaint(browser: Browser, url: string): Promise<number> {
  return inContext(browser, {}, async (context) => {
    let painted!: (ms: number) => void
    const fcp = new Promise<number>(resolve => (painted = resolve))
    await answered(context.exposeFunction('benchPainted', (ms: number) => painted(ms)), 'exposeFunction')
    await answered(context.addInitScript(PAINT_SCRIPT), 'addInitScript')
    const network = trackNetwork(context)
    const page = await answered(context.newPage(), 'newPage')
    await page.goto(url, { waitUntil: 'commit', timeout: REQUEST_DEADLINE_MS })
    // A page that still shows nothing after its network has been quiet for a while never
    // will (e.g. a script that 404s while stage-web is being rebuilt): fail, saying what failed.
    const blank = until(() => network.idle(BLANK_AFTER_MS), `the first contentful paint of ${url}`, REQUEST_DEADLINE_MS).then(() => {
      throw new Error(`${url} painted nothing in ${BLANK_AFTER_MS} ms of network quiet${network.failed.length ? `; failed: ${network.failed.join(', ')}` : ''}`)
    })
    blank.catch(() => {})
    return Promise.race([fcp, blank])
  })
}

interface Script { url: string, bytes: number, gzipBytes: number, contentEncoding: string | null }

/**
 * What a context loads: every JavaScript response (each URL once: a second
 * document of the same load is served from the cache), whether the page called
 * `origin` with a bearer token and got a 2xx (signed in), and when its network
 * is idle.
 */
function watchLoad(context: BrowserContext, origin: string) {
  // URL → the response's content-encoding. The bodies are fetched again once the load is
  // over: the browser drops a body when its document is navigated away from (a sign-in
  // redirect), and the files are static, content-hashed assets.
  const scripts = new Map<string, string | null>()
  const network = trackNetwork(context)
  let signedIn = false
  context.on('response', (response) => {
    const request = response.request()
    const url = response.url()
    const javascript = request.resourceType() === 'script' || /javascript/.test(response.headers()['content-type'] ?? '')
    if (javascript && response.status() === 200 && !scripts.has(url))
      scripts.set(url, response.headers()['content-encoding'] ?? null)
    if (url.startsWith(origin) && response.ok()) {
      void request.allHeaders().then((headers) => {
        if (headers.authorization?.startsWith('Bearer '))
          signedIn = true
      }, () => {})
    }
  })
  return {
    signedIn: () => signedIn,
    idle: network.idle,
    scripts: () => Promise.all([...scripts].map(async ([url, contentEncoding]): Promise<Script> => {
      const response = await context.request.get(url, { timeout: REQUEST_DEADLINE_MS })
      if (!response.ok())
        throw new Error(`${url} answered ${response.status()} when fetched again`)
      const body = await response.body()
      return { url, bytes: body.length, gzipBytes: gzipSync(body, { level: 9 }).length, contentEncoding }
    })),
  }
}

export interface FirstLoad { scripts: Script[], bytes: number, gzipBytes: number, signedIn: boolean, finalUrl: string }

/** `url` in a fresh context (empty cache; `state`'s cookies and storage when given) until the network is idle. */
export async function firstLoad(browser: Browser, url: string, origin: string, state?: StorageState): Promise<FirstLoad> {
  return inContext(browser, state ? { storageState: state } : {}, async (context) => {
    const watch = watchLoad(context, origin)
    const page = await answered(context.newPage(), 'newPage')
    await page.goto(url, { waitUntil: 'load', timeout: REQUEST_DEADLINE_MS })
    if (state)
      await until(watch.signedIn, `the signed-in load of ${url} to call the API with a token`, REQUEST_DEADLINE_MS)
    await until(watch.idle, `the network of ${url} to be idle`, REQUEST_DEADLINE_MS)
    const scripts = (await watch.scripts()).sort((a, b) => b.gzipBytes - a.gzipBytes)
    return {
      scripts,
      bytes: scripts.reduce((sum, script) => sum + script.bytes, 0),
      gzipBytes: scripts.reduce((sum, script) => sum + script.gzipBytes, 0),
      signedIn: watch.signedIn(),
      finalUrl: page.url(),
    }
  })
}

/**
 * Cookies and storage of a browser signed in as `token`'s user: better-auth's
 * session cookie (what /sign-in leaves), then one load of the app. A client that
 * renews its tokens through the authorize endpoint on load is signed in by that
 * load; one that keeps tokens in storage and signs in from a button is sent
 * through it (the authorize endpoint, seeing the session, answers with a code).
 */
export async function signedInState(browser: Browser, origin: string, token: string): Promise<{ state: StorageState, how: string }> {
  return inContext(browser, {}, async (context) => {
    // The bench's bearer is the signed session token, i.e. the cookie's value (dev over http: no __Secure- prefix).
    await answered(context.addCookies([{ name: 'better-auth.session_token', value: encodeURIComponent(token), url: origin, httpOnly: true, sameSite: 'Lax' }]), 'addCookies')
    const session = await (await context.request.get(`${origin}/api/auth/get-session`, { timeout: REQUEST_DEADLINE_MS })).json() as { user?: unknown } | null
    if (!session?.user)
      throw new Error('the server did not accept the session cookie better-auth.session_token')
    const watch = watchLoad(context, origin)
    const page = await answered(context.newPage(), 'newPage')
    await page.goto(`${origin}/app/`, { waitUntil: 'load', timeout: REQUEST_DEADLINE_MS })
    await until(watch.idle, 'the app to settle', REQUEST_DEADLINE_MS)
    let how = 'the session cookie on load'
    if (!watch.signedIn()) {
      const name = /sign in/i
      await page.getByRole('button', { name }).or(page.getByRole('link', { name })).first().click({ timeout: REQUEST_DEADLINE_MS })
      await until(watch.signedIn, 'the app to sign in with the session cookie', REQUEST_DEADLINE_MS)
      await until(watch.idle, 'the app to settle', REQUEST_DEADLINE_MS)
      how = 'its Sign in button, then storage'
    }
    return { state: await answered(context.storageState(), 'storageState'), how }
  })
}
