import { setTimeout as sleep } from 'node:timers/promises'

import { SERVER_APP, type Row, type Scenario } from '../context.ts'
import { startServer, type ServerOptions } from '../infra.ts'
import { formatNumber, formatSigned } from '../stats.ts'
import { openChatSubscribers } from '../subscribers.ts'

const MB = 1024 * 1024

/** idle's instance: the same deployment, a log of its own, its inspector open (to force a GC). */
export function idleInstanceOptions(options: ServerOptions): ServerOptions {
  return { ...options, logFile: options.logFile.replace(/\.log$/, '-idle.log'), inspect: true }
}

/**
 * A fresh instance of the deployment (started before the first scenario beside
 * the others, never sent a request until now): RSS once started, RSS added by 1 000
 * idle `chats.onMessages` subscriptions (from the start's RSS after a forced GC,
 * to the RSS with them open, read before and after another forced GC), and the SQL
 * it sends while nothing happens (statement log of its connections over a window,
 * and pg_stat_database commits).
 */
export const idle: Scenario = {
  name: 'idle',
  quick: true,
  async run(context): Promise<Row[]> {
    const count = context.quick ? 50 : 1000
    const windowMs = context.quick ? 3000 : 10_000
    // Measuring windows, not waits for a condition: RSS settles after start-up and after the subscriptions.
    const settleMs = context.quick ? 1000 : 3000
    // The other instance(s) stay up but idle: their SQL counts as ours too.
    const server = await (context.prestarted.idle ?? startServer(idleInstanceOptions(context.serverOptions)))
    try {
      const collectGarbage = server.collectGarbage
      if (!collectGarbage)
        throw new Error('idle\'s instance was started without its inspector: no forced GC')
      await sleep(settleMs)
      const startRss = server.rss()
      // Both added figures start from here, so the start-up's own garbage is in neither
      // (bench-results.json also keeps the older reading from the uncollected start).
      await collectGarbage()
      const startRssCollected = server.rss()
      const subscribers = await openChatSubscribers([server.url], context.deployment.users.map(user => user.token), count)
      try {
        await sleep(settleMs)
        const subscribedRss = server.rss()
        await collectGarbage()
        const subscribedRssCollected = server.rss()
        const added = subscribedRss - startRssCollected
        const addedCollected = subscribedRssCollected - startRssCollected
        const commits = async () => (await context.infra.postgres.query<{ xact_commit: string }>(`SELECT xact_commit FROM pg_stat_database WHERE datname = 'airi_bench'`))[0]!.xact_commit
        await context.infra.postgres.query('SELECT pg_stat_clear_snapshot()')
        const before = Number(await commits())
        const started = Date.now()
        const statements = await context.infra.postgres.capture(() => sleep(windowMs))
        const seconds = (Date.now() - started) / 1000
        await context.infra.postgres.query('SELECT pg_stat_clear_snapshot()')
        const xactPerSecond = (Number(await commits()) - before) / seconds
        const ours = statements.filter(statement => statement.app === SERVER_APP)
        const perSecond = ours.length / seconds
        context.log(`idle: RSS ${formatNumber(startRss / MB)} MB (${formatNumber(startRssCollected / MB)} MB after a forced GC), ${formatSigned(added / MB)} MB with ${count} subscriptions (${formatSigned(addedCollected / MB)} MB after a forced GC); ${formatNumber(perSecond)} statements/s${ours.length ? `, e.g. ${ours[0]!.sql.slice(0, 200)}` : ''}`)
        const row = (metric: string, ours: string, target: string, met: boolean, data: Record<string, number>): Row => ({ scenario: 'idle', metric, baseline: '—', ours, ratio: '—', target, met, data })
        const addedTarget = count === 1000 ? '≤ +40 MB' : '≤ +40 MB per 1 000'
        const addedLimit = 40 * MB * count / 1000
        return [
          row('RSS after start', `${formatNumber(startRss / MB)} MB`, '≤ 150 MB', startRss <= 150 * MB, { rssBytes: startRss, rssCollectedBytes: startRssCollected }),
          row(`RSS added by ${count} idle subscriptions, without a forced GC`, `${formatSigned(added / MB)} MB`, addedTarget, added <= addedLimit, { addedBytes: added, startRssCollectedBytes: startRssCollected, subscribedRssBytes: subscribedRss, addedSinceUncollectedStartBytes: subscribedRss - startRss }),
          row(`RSS added by ${count} idle subscriptions, after a forced GC`, `${formatSigned(addedCollected / MB)} MB`, addedTarget, addedCollected <= addedLimit, { addedBytes: addedCollected, startRssCollectedBytes: startRssCollected, subscribedRssCollectedBytes: subscribedRssCollected }),
          row(`SQL statements/s while idle (all instances, ${count} subscriptions)`, formatNumber(perSecond), '0', perSecond === 0, { statementsPerSecond: perSecond }),
          // Informational: pg_stat_database also counts autovacuum and stats flushed late by backends busy before the window.
          { ...row('transactions/s while idle (pg_stat_database, informational)', formatNumber(xactPerSecond), '—', true, { xactPerSecond }), met: null },
        ]
      }
      finally {
        subscribers.close()
      }
    }
    finally {
      await server.stop()
    }
  },
}
