import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

import { firstLoad, firstPaint, launchChromium, signedInState, type Browser, type FirstLoad, type StorageState } from '../browser.ts'
import { REQUEST_DEADLINE_MS, type BenchContext, type Row, type Scenario } from '../context.ts'
import { onCleanup, prepareServerCheckout } from '../infra.ts'
import { formatNumber, formatSigned, formatSummary, percentile, summarize } from '../stats.ts'

const KB = 1024
/** Issue 27: `/app/` JavaScript ≤ 250 KB gzip on first load (KB of 1 024 bytes, as Lighthouse's budgets count). */
const BUDGET_KB = 250
/** First contentful paint added to a bare page's; why this figure: docs/performance.md ("stage-web budget"). */
const ADDED_FCP_TARGET_MS = 500
const BARE_PAGE = '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Bare</title></head><body><h1>A bare page</h1></body></html>'

/** A tiny static page on loopback: the baseline's first contentful paint. */
async function startBarePage(): Promise<{ url: string, close: () => Promise<void> }> {
  const server: Server = createServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-cache' })
    response.end(BARE_PAGE)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const close = () => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  })
  onCleanup(close)
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, close }
}

const kb = (bytes: number) => bytes / KB

function budgetRow(label: string, loads: FirstLoad[], error?: string): Row {
  const metric = `/app/ JavaScript on first load, ${label} (gzip -9 of each file)`
  if (error || loads.length === 0)
    return { scenario: 'stage-web', metric, baseline: '—', ours: `failed: ${error ?? 'no load'}`, ratio: '—', target: `≤ ${BUDGET_KB} KB`, met: false, data: { error: error ?? null } }
  const gzip = summarize(loads.map(load => kb(load.gzipBytes)))
  const last = loads.at(-1)!
  return {
    scenario: 'stage-web',
    metric: `${metric}, ${last.scripts.length} file(s), ends on ${new URL(last.finalUrl).pathname}`,
    baseline: '—',
    ours: `${formatSummary(gzip, 'KB')} (${formatNumber(kb(last.bytes))} KB raw)`,
    ratio: '—',
    target: `≤ ${BUDGET_KB} KB`,
    met: gzip.median <= BUDGET_KB,
    data: {
      gzipKB: gzip,
      rawKB: summarize(loads.map(load => kb(load.bytes))),
      files: JSON.stringify(last.scripts.map(script => ({ path: new URL(script.url).pathname, bytes: script.bytes, gzipBytes: script.gzipBytes, contentEncoding: script.contentEncoding }))),
    },
  }
}

/**
 * stage-web's first load in Chromium (issue 27): the JavaScript `/app/` loads
 * signed out and signed in, gzipped, against a 250 KB budget; its first
 * contentful paint against a bare static page's, paired load by load.
 */
export const stageWeb: Scenario = {
  name: 'stage-web',
  // 15–30 s with --quick on the shared machine (a browser, a fresh context per load, a silent
  // sign-in): too dear for CI's quick run; `--quick stage-web` runs it with small counts.
  quick: false,
  async run(context) {
    await checkStageWeb(context)
    const { browser, close } = await launchChromium()
    const bare = await startBarePage()
    try {
      return await measure(context, browser, bare.url)
    }
    finally {
      await bare.close()
      await close()
    }
  },
}

/** The server under test serves a fresh build of its own stage-web at /app/. */
async function checkStageWeb(context: BenchContext): Promise<void> {
  // Again here: stage-web may have been edited since the run started.
  const seconds = await prepareServerCheckout(context.serverRoot, context.infra.root)
  if (seconds > 0)
    context.log(`stage-web: checked (built when stale) in ${seconds.toFixed(1)} s`)
  const response = await fetch(`${context.server.url}/app/`, { signal: AbortSignal.timeout(REQUEST_DEADLINE_MS) })
  const body = await response.text()
  if (response.status !== 200 || !body.includes('<script'))
    throw new Error(`${context.server.url}/app/ answered ${response.status} without the built client`)
}

async function measure(context: BenchContext, browser: Browser, bareUrl: string): Promise<Row[]> {
  const origin = context.server.url
  const appUrl = `${origin}/app/`
  // A fresh context costs ~1 s of the machine's time per load (its renderer process); FCP itself is the browser's figure.
  const pairs = context.quick ? 1 : 6
  let state: StorageState | undefined
  let signInError: string | undefined
  try {
    const signed = await signedInState(browser, origin, context.deployment.users.at(-1)!.token)
    state = signed.state
    context.log(`stage-web: signed in through ${signed.how}`)
  }
  catch (error) {
    signInError = (error as Error).message.split('\n')[0]
    context.log(`stage-web: no signed-in load: ${(error as Error).stack ?? signInError}`)
  }
  // Warm-up: the browser's first page pays for starting its processes.
  await firstPaint(browser, bareUrl)
  const signedOut: FirstLoad[] = []
  const signedIn: FirstLoad[] = []
  const fcp = { bare: [] as number[], app: [] as number[], added: [] as number[] }
  for (let round = 0; round < context.rounds; round++) {
    const out = await firstLoad(browser, appUrl, origin)
    if (out.signedIn)
      throw new Error('the signed-out load of /app/ called the API with a token')
    signedOut.push(out)
    if (state)
      signedIn.push(await firstLoad(browser, appUrl, origin, state))
    const bare: number[] = []
    const app: number[] = []
    for (let index = 0; index < pairs; index++) {
      bare.push(await firstPaint(browser, bareUrl))
      app.push(await firstPaint(browser, appUrl))
    }
    fcp.bare.push(percentile(bare, 50))
    fcp.app.push(percentile(app, 50))
    fcp.added.push(percentile(app, 50) - percentile(bare, 50))
    const inKb = (loads: FirstLoad[]) => loads.length ? `${formatNumber(kb(loads.at(-1)!.gzipBytes))} KB` : 'n/a'
    context.log(`stage-web round ${round + 1}: JS signed out ${inKb(signedOut)}, signed in ${inKb(signedIn)} (gzip); FCP p50 bare ${formatNumber(fcp.bare.at(-1)!)} ms, /app/ ${formatNumber(fcp.app.at(-1)!)} ms`)
  }
  const bare = summarize(fcp.bare)
  const app = summarize(fcp.app)
  const added = summarize(fcp.added)
  return [
    budgetRow('signed out', signedOut),
    budgetRow('signed in', signedIn, signInError),
    {
      scenario: 'stage-web',
      metric: `first contentful paint, /app/ signed out, p50 (${pairs} fresh loads/round)`,
      baseline: `bare page ${formatSummary(bare, 'ms')}`,
      ours: formatSummary(app, 'ms'),
      ratio: `${formatSigned(added.median)} ms`,
      target: `added ≤ ${ADDED_FCP_TARGET_MS} ms`,
      met: added.median <= ADDED_FCP_TARGET_MS,
      data: { bareMs: bare, appMs: app, addedMs: added },
    },
  ]
}
