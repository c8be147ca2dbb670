import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'

import { trpcCall } from '../deployment.ts'
import { startHelper, startServer, until, type ServerOptions, type ServerProcess } from '../infra.ts'
import { formatNumber, formatSummary, percentile, ratio, summarize } from '../stats.ts'
import { openBareSubscribers, openChatSubscribers, type Subscribers } from '../subscribers.ts'
import { REQUEST_DEADLINE_MS, type BenchContext, type Row, type Scenario } from '../context.ts'

/** The second instance of the two-instance run: the same deployment, a log of its own. */
export function fanoutInstanceOptions(options: ServerOptions): ServerOptions {
  return { ...options, logFile: options.logFile.replace(/\.log$/, '-2.log') }
}

/** Sends `messages` one after another; each is timed from the send to its arrival at every subscriber. */
async function measure(subscribers: Subscribers, messages: number, send: (seq: number) => Promise<void>, firstSeq: number): Promise<number[]> {
  const latencies: number[] = []
  for (let seq = firstSeq; seq < firstSeq + messages; seq++) {
    const sent = performance.now()
    await send(seq)
    await until(() => subscribers.received(seq).length >= subscribers.count, `message ${seq} to reach ${subscribers.count} subscribers`, 120_000)
    latencies.push(...subscribers.received(seq).map(at => at - sent))
  }
  return latencies
}

/**
 * send → receive of one chat's messages at 1 000 subscribers of `chats.onMessages`
 * (every bench user is a member; each but the sender holds several sockets), against a bare `ws`
 * broadcast to as many sockets; on one instance, then spread over two.
 */
export const fanout: Scenario = {
  name: 'fanout',
  quick: true,
  async run(context: BenchContext) {
    const count = context.quick ? 50 : 1000
    const messages = context.quick ? 5 : 20
    const users = context.deployment.users
    const owner = users[0]!
    const chat = await trpcCall<{ id: string }>(context.server.url, owner.token, 'chats.create', { type: 'group', title: 'bench fan-out', members: users.slice(1).map(user => ({ type: 'user', id: user.id })) }, 'mutation')
    const payload = (seq: number) => `fanout:${seq}: ${'x'.repeat(64)}`
    const sendOurs = (server: ServerProcess) => async (seq: number) => {
      await trpcCall(server.url, owner.token, 'chats.sendMessages', { chatId: chat.id, messages: [{ id: randomUUID(), role: 'user', content: payload(seq) }] }, 'mutation')
    }
    const bare = await startHelper<{ url: string }>('bare-ws.ts', [], context.infra.root)
    let second: ServerProcess | undefined
    // The sender is a member (it must be, to send) but holds no counted socket: a
    // client's own message reaching its own other devices is not the fan-out.
    const tokens = users.filter(user => user !== owner).map(user => user.token)
    try {
      const bareSubscribers = await openBareSubscribers(bare.info.url, count)
      const sendBare = async (seq: number) => {
        const response = await fetch(`${bare.info.url}/broadcast`, { method: 'POST', body: JSON.stringify({ content: payload(seq) }), signal: AbortSignal.timeout(REQUEST_DEADLINE_MS) })
        await response.arrayBuffer()
      }
      let seq = 0
      const rows: Row[] = []
      const run = async (label: string, servers: ServerProcess[]) => {
        const ours = await openChatSubscribers(servers.map(server => server.url), tokens, count)
        try {
          // One warm-up message each.
          await measure(bareSubscribers, 1, sendBare, seq++)
          await measure(ours, 1, sendOurs(servers[0]!), seq++)
          const base = { p50: [] as number[], p99: [] as number[] }
          const mine = { p50: [] as number[], p99: [] as number[] }
          for (let round = 0; round < context.rounds; round++) {
            const b = await measure(bareSubscribers, messages, sendBare, seq)
            seq += messages
            const o = await measure(ours, messages, sendOurs(servers[0]!), seq)
            seq += messages
            base.p50.push(percentile(b, 50))
            base.p99.push(percentile(b, 99))
            mine.p50.push(percentile(o, 50))
            mine.p99.push(percentile(o, 99))
            context.log(`fanout ${label} round ${round + 1}: bare p50/p99 ${formatNumber(base.p50.at(-1)!)}/${formatNumber(base.p99.at(-1)!)} ms, ours ${formatNumber(mine.p50.at(-1)!)}/${formatNumber(mine.p99.at(-1)!)} ms`)
          }
          const p99Ratio = ratio(summarize(mine.p99).median, summarize(base.p99).median)
          rows.push({
            scenario: 'fanout',
            metric: `${count} subscribers, ${label}, send→receive p50`,
            baseline: `bare ws ${formatSummary(summarize(base.p50), 'ms')}`,
            ours: formatSummary(summarize(mine.p50), 'ms'),
            ratio: `×${formatNumber(ratio(summarize(mine.p50).median, summarize(base.p50).median))}`,
            target: '—',
            met: null,
            data: { bareP50: summarize(base.p50), oursP50: summarize(mine.p50) },
          }, {
            scenario: 'fanout',
            metric: `${count} subscribers, ${label}, send→receive p99`,
            baseline: `bare ws ${formatSummary(summarize(base.p99), 'ms')}`,
            ours: formatSummary(summarize(mine.p99), 'ms'),
            ratio: `×${formatNumber(p99Ratio)}`,
            target: '≤ ×3',
            met: p99Ratio <= 3,
            data: { bareP99: summarize(base.p99), oursP99: summarize(mine.p99) },
          })
        }
        finally {
          ours.close()
        }
      }
      await run('1 instance', [context.server])
      second = await (context.prestarted.fanout ?? startServer(fanoutInstanceOptions(context.serverOptions)))
      await run('2 instances', [context.server, second])
      bareSubscribers.close()
      return rows
    }
    finally {
      // Also when the one-instance run failed before taking it: it must not linger into idle.
      second ??= await context.prestarted.fanout?.catch(() => undefined)
      await second?.stop()
      await bare.stop()
    }
  },
}
