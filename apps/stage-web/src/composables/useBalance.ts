import { balance, refreshBalance } from '../balance.ts'

/** The live Flux balance (kept true by the shell from the feed) and a way to read it again. */
export function useBalance() {
  return { balance, refreshBalance }
}
