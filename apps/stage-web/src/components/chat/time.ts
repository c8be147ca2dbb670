// A message's time: the time of day today, the date and time otherwise (the year
// when it is not this one), and the full date for a tooltip.

const sameDay = (a: Date, b: Date) => a.toDateString() === b.toDateString()

export function shortTime(date: Date, locale: string, now = new Date()): string {
  const time = { hour: '2-digit', minute: '2-digit' } as const
  if (sameDay(date, now))
    return new Intl.DateTimeFormat(locale, time).format(date)
  const year = date.getFullYear() === now.getFullYear() ? {} : { year: 'numeric' } as const
  return new Intl.DateTimeFormat(locale, { ...year, month: 'short', day: 'numeric', ...time }).format(date)
}

export function fullTime(date: Date, locale: string): string {
  return new Intl.DateTimeFormat(locale, { dateStyle: 'full', timeStyle: 'short' }).format(date)
}
