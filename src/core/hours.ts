/**
 * Time windows (`Mon-Fri 08:00-18:00` in an IANA zone): parsed once when a
 * policy loads, judged against an instant by the runtime's time-zone data.
 * One home for the policy's and a grant's issuance hours (core/policy-eval.ts)
 * and the `outside_hours` anomaly rule's expected hours (core/anomaly.ts).
 * Pure: no clock, the caller passes the instant.
 */

const DAY_NAMES = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const
const DAY = '(Mon|Tue|Wed|Thu|Fri|Sat|Sun)'
const TIME = '([01][0-9]|2[0-3]):([0-5][0-9])'
const END = '([01][0-9]|2[0-3]):([0-5][0-9])|24:00'
const ENTRY = new RegExp(`^${DAY}(?:-${DAY})? ${TIME}-(${END})$`)

/** What the schemas say of malformed hours. */
export const HOURS_RULE = 'must be entries like `Mon-Fri 08:00-18:00`, separated by commas (a time range ends after it starts)'
/** What the schemas say of an unknown zone. */
export const TIME_ZONE_RULE = 'must be an IANA time zone, e.g. Europe/Berlin'

/** One entry of declared hours: on these weekdays (0 = Sunday), from `from` (inclusive) to `to` (exclusive) minutes after local midnight. */
export interface HoursEntry {
  readonly days: ReadonlySet<number>
  readonly from: number
  readonly to: number
}

/** Declared hours, parsed; `undefined` when malformed. A day range may wrap (`Fri-Mon`); a time range may not (`to` > `from`). */
export function parseHours(text: string): readonly HoursEntry[] | undefined {
  const entries: HoursEntry[] = []
  for (const part of text.split(',')) {
    const m = ENTRY.exec(part.trim())
    if (m === null) return undefined
    const first = DAY_NAMES.indexOf(m[1] as (typeof DAY_NAMES)[number])
    const last = m[2] === undefined ? first : DAY_NAMES.indexOf(m[2] as (typeof DAY_NAMES)[number])
    const days = new Set<number>()
    for (let d = first; ; d = (d + 1) % 7) {
      days.add(d)
      if (d === last) break
    }
    const from = Number(m[3]) * 60 + Number(m[4])
    const to = m[5] === '24:00' ? 24 * 60 : Number(m[6]) * 60 + Number(m[7])
    if (to <= from) return undefined
    entries.push({ days, from, to })
  }
  return entries
}

/** True when `timeZone` is an IANA zone name the runtime knows. */
export function isTimeZone(timeZone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone })
    return true
  } catch {
    return false
  }
}

type LocalTime = { readonly weekday: number; readonly minutes: number; readonly text: string }

// One formatter per zone (building one costs far more than formatting with it), and the last minute it read:
// the exchange asks for now, again and again within one minute, and formatting costs microseconds. Every zone's
// offset today is a whole number of minutes, so one UTC minute is one local minute.
const zones = new Map<string, { readonly format: Intl.DateTimeFormat; minute: number; local: LocalTime | undefined }>()

/** Weekday (0 = Sunday) and minutes after midnight of `at` (epoch seconds) in `timeZone`, by the runtime's time-zone data. */
export function localTime(at: number, timeZone: string): LocalTime {
  let zone = zones.get(timeZone)
  if (zone === undefined) {
    const format = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })
    zone = { format, minute: Number.NaN, local: undefined }
    zones.set(timeZone, zone)
  }
  const minute = Math.floor(at / 60)
  if (zone.minute === minute && zone.local !== undefined) return zone.local
  const part = (type: Intl.DateTimeFormatPartTypes) => parts.find((p) => p.type === type)?.value ?? ''
  const parts = zone.format.formatToParts(new Date(minute * 60_000))
  const [day, hour, minutes] = [part('weekday'), part('hour'), part('minute')]
  const weekday = DAY_NAMES.indexOf(day as (typeof DAY_NAMES)[number])
  zone.local = { weekday, minutes: Number(hour) * 60 + Number(minutes), text: `${day} ${hour}:${minutes}` }
  zone.minute = minute
  return zone.local
}

/** Declared hours: as written, parsed, and the IANA zone they are in. */
export interface DeclaredHours {
  readonly text: string
  readonly entries: readonly HoursEntry[]
  readonly timeZone: string
}

/** Hours as a policy writes them, compiled; `undefined` when malformed (the schemas refuse it first). */
export function declareHours(text: string, timeZone: string): DeclaredHours | undefined {
  const entries = parseHours(text)
  return entries === undefined ? undefined : { text, entries, timeZone }
}

/**
 * Whether `at` (epoch seconds) falls inside `hours`, and the sentence that says so for logs and explain:
 * `at Mon 19:04 Europe/Berlin, outside Mon-Fri 08:00-18:00`.
 */
export function judgeHours(hours: DeclaredHours, at: number): { readonly inside: boolean; readonly detail: string } {
  const t = localTime(at, hours.timeZone)
  const inside = hours.entries.some((e) => e.days.has(t.weekday) && t.minutes >= e.from && t.minutes < e.to)
  return { inside, detail: `at ${t.text} ${hours.timeZone}, ${inside ? 'inside' : 'outside'} ${hours.text}` }
}

/** The minutes of the week (0 = Sunday 00:00) `hours` covers, in their own zone; `mandate policy diff` compares two. */
export function weekMinutes(hours: DeclaredHours): Uint8Array {
  const week = new Uint8Array(7 * 24 * 60)
  for (const e of hours.entries) for (const d of e.days) week.fill(1, d * 1440 + e.from, d * 1440 + e.to)
  return week
}
