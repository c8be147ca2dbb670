import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import type { Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { startFakeStripe, type FakeStripe } from '@airi/tooling/fakes/stripe'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, startTestServer, type TestServer } from '../harness.ts'
import { deviceOf } from './app.ts'
import { checkA11y, launchChromium, type TestBrowser } from './chromium.ts'

// The Flux screen (SPEC §4.3, §4.8, §4.11): the live balance, packages in a chosen
// currency, Stripe's checkout (the fake's) and the way back; and the app in Chinese.

const PRODUCT = 'prod_test_stage_web_flux'
const INITIAL = 100

let server: TestServer
let chromium: TestBrowser
let stripe: FakeStripe

beforeAll(async () => {
  // The same step `pnpm start` takes: build apps/stage-web when its dist is missing or stale.
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[stripe, chromium] = await Promise.all([startFakeStripe(), launchChromium()])
  server = await startTestServer({
    trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }],
    stripe: stripe.settings,
  })
  // The Flux product, as an operator would set it up: one package in USD and CNY, one in USD only.
  await server.api.services.config.set('STRIPE_FLUX_PRODUCT_ID', PRODUCT)
  // A chat model, so the Usage screen has prices to show (nothing calls it here).
  await server.api.services.operator.upstreams.put({ kind: 'llm', alias: 'chat', baseUrl: 'https://llm.example.com/v1', model: 'upstream-chat', apiKey: 'sk-chat-key-00001111' }, null)
  stripe.addPrice({ product: PRODUCT, currency: 'usd', unitAmount: 300, currencyOptions: { cny: 2200 }, nickname: 'Starter', metadata: { fluxAmount: '300' } })
  stripe.addPrice({ product: PRODUCT, currency: 'usd', unitAmount: 1000, metadata: { fluxAmount: '1200', recommended: 'true' } })
  // The fake's checkout page pays at once and delivers the signed completion here.
  stripe.webhookUrl = `${server.baseUrl}/api/v1/stripe/webhook`
}, 180_000)

afterAll(async () => {
  await chromium?.close()
  await server?.close()
  await stripe?.close()
})

const path = (page: Page) => new URL(page.url()).pathname
const headerFlux = async (page: Page) => Number(await page.getByTestId('header-balance').getAttribute('data-flux'))
const nav = (page: Page) => page.getByRole('navigation', { name: /^(Main|主导航)$/ })

describe('stage-web: the Flux screen', () => {
  it('tops up in the chosen currency through the checkout and back, the credit shows on another device without a reload; a cancelled checkout changes nothing', async () => {
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await deviceOf(server, chromium, user)
    // Another device of the user, on another screen.
    const other = await deviceOf(server, chromium, user)
    await nav(other.page).getByRole('link', { name: 'Characters' }).click()
    await other.page.waitForURL(url => url.pathname === '/app/characters')
    await expect.poll(() => headerFlux(other.page)).toBe(INITIAL)

    // Flux opens from the nav, and Back returns to the screen before it.
    await nav(page).getByRole('link', { name: 'Characters' }).click()
    await page.waitForURL(url => url.pathname === '/app/characters')
    await nav(page).getByRole('link', { name: 'Flux' }).click()
    await page.getByTestId('flux-balance').getByText(`${INITIAL} Flux`).waitFor()
    await page.goBack()
    await page.waitForURL(url => url.pathname === '/app/characters')
    await page.goForward()
    await page.getByTestId('flux-balance').getByText(`${INITIAL} Flux`).waitFor()

    const starter = page.getByRole('button', { name: /Starter/ })
    await starter.getByText('$3.00').waitFor()
    await page.getByTestId('currency').selectOption('cny')
    await starter.getByText('¥22.00').waitFor()
    expect(await page.getByRole('button', { name: /1,200 Flux/ }).isDisabled()).toBe(true)
    await checkA11y(page, 'flux')

    const checkout = page.waitForRequest(request => request.url().startsWith(`${stripe.url}/c/pay/`))
    await starter.click()
    const sessionId = new URL((await checkout).url()).pathname.split('/').at(-1)!
    expect(stripe.sessions.get(sessionId)).toMatchObject({ currency: 'cny', amount_total: 2200, client_reference_id: user.id })
    // The buyer comes back to the Flux screen itself.
    expect(stripe.sessions.get(sessionId)?.success_url).toBe(`${server.baseUrl}/app/flux?checkout=success&session_id={CHECKOUT_SESSION_ID}`)

    // Back from the fake checkout, whose signed webhook credited the account: the banner, in the currency chosen before.
    await page.getByTestId('checkout-success').and(page.locator('[data-credit="credited"]')).waitFor()
    await page.getByTestId('flux-balance').getByText(`${INITIAL + 300} Flux`).waitFor()
    expect(path(page)).toBe('/app/flux')
    expect(new URL(page.url()).search).toBe('')
    expect(await page.getByTestId('currency').inputValue()).toBe('cny')
    await starter.getByText('¥22.00').waitFor()
    expect(await headerFlux(page)).toBe(INITIAL + 300)
    expect(await server.api.services.billing.getBalance(user.id)).toBe(INITIAL + 300)
    await page.getByTestId('flux-history').getByText('+300').waitFor()
    expect(await page.getByTestId('flux-history').textContent()).toContain('Flux purchase')
    await checkA11y(page, 'flux after a top-up')
    await chromium.shots(page, 'flux')

    // The other device shows the new balance without a reload (the balance event on its feed), still where it was.
    await expect.poll(() => headerFlux(other.page)).toBe(INITIAL + 300)
    expect(path(other.page)).toBe('/app/characters')
    expect(other.consoleErrors).toEqual([])

    // Cancelling at the checkout page (the fake cancels with ?cancel) comes back with the cancel banner.
    await page.route(`${stripe.url}/c/pay/*`, route => route.continue({ url: `${route.request().url()}?cancel` }))
    await starter.click()
    await page.getByTestId('checkout-cancel').waitFor()
    await page.getByTestId('flux-balance').getByText(`${INITIAL + 300} Flux`).waitFor()
    expect(await page.getByTestId('currency').inputValue()).toBe('cny')
    await chromium.screenshot(page, 'flux-cancelled-1280')
    expect(await server.api.services.billing.getBalance(user.id)).toBe(INITIAL + 300)
    expect(consoleErrors).toEqual([])
  })

  it('speaks Chinese on the Flux and Usage screens once chosen in the menu, after a reload too', async () => {
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await deviceOf(server, chromium, user)
    await page.getByRole('button', { name: 'Settings and account' }).click()
    await page.getByLabel('Language').selectOption('zh-CN')
    await page.keyboard.press('Escape')

    await nav(page).getByRole('link', { name: 'Flux' }).click()
    await page.getByRole('heading', { name: '余额' }).waitFor()
    await page.getByRole('heading', { name: '充值' }).waitFor()
    await page.getByRole('heading', { name: '明细' }).waitFor()
    // The welcome credit, in words of the reader's language.
    await page.getByTestId('flux-history').getByText('新用户赠送的 Flux').waitFor()
    await page.getByRole('button', { name: /Starter/ }).getByText(/\$3\.00/).waitFor()
    await page.getByRole('option', { name: /美元/ }).waitFor({ state: 'attached' })
    await checkA11y(page, 'flux in Chinese')
    await chromium.screenshot(page, 'flux-zh-CN-1280')

    await nav(page).getByRole('link', { name: '用量' }).click()
    await page.getByRole('heading', { name: '用量', level: 1 }).waitFor()
    await page.getByTestId('usage-empty').getByText('还没有调用记录').waitFor()
    await page.getByTestId('usage-chart-empty').getByText('最近 30 天没有消耗 Flux。').waitFor()
    await page.getByTestId('usage-prices').getByText('标准价格，按每 1,000 个 token 计').waitFor()

    await page.reload()
    await page.getByRole('heading', { name: '用量', level: 1 }).waitFor()
    await nav(page).getByRole('link', { name: '账户' }).waitFor()
    expect(await page.evaluate('document.documentElement.lang')).toBe('zh-CN')
    await checkA11y(page, 'usage in Chinese')
    await chromium.screenshot(page, 'usage-zh-CN-1280')
    expect(consoleErrors).toEqual([])
  })
})
