/**
 * Waits for `condition` by polling, failing with `what` after `timeoutMs`. Tests
 * wait for conditions, never for fixed times, so a loaded machine is only slower.
 */
export async function until(condition: () => boolean | Promise<boolean>, what = 'a condition', timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}
