/**
 * Time windows (core/hours.ts): inside and outside, the start inclusive and the end exclusive, `24:00`,
 * day ranges that wrap the week, and the local time read through the zone's rules across a change of
 * offset (the runtime's time-zone data through Intl, no offset arithmetic of ours).
 */
import { describe, expect, it } from 'vitest'
import { declareHours, judgeHours, localTime, parseHours, weekMinutes } from '../../../src/core/hours.js'

const utc = (y: number, mo: number, d: number, h: number, mi = 0) => Date.UTC(y, mo - 1, d, h, mi) / 1000
const hours = (text: string, zone = 'UTC') => declareHours(text, zone)!
const inside = (text: string, at: number, zone = 'UTC') => judgeHours(hours(text, zone), at).inside

describe('judgeHours', () => {
  // 2027-01-18 is a Monday.
  it('is inside from the start minute on and outside from the end minute on', () => {
    const h = 'Mon-Fri 08:00-18:00'
    expect(inside(h, utc(2027, 1, 18, 7, 59))).toBe(false)
    expect(inside(h, utc(2027, 1, 18, 8, 0))).toBe(true)
    expect(inside(h, utc(2027, 1, 18, 8, 0) + 59)).toBe(true)
    expect(inside(h, utc(2027, 1, 18, 17, 59) + 59)).toBe(true)
    expect(inside(h, utc(2027, 1, 18, 18, 0))).toBe(false)
    expect(inside(h, utc(2027, 1, 23, 12, 0))).toBe(false) // Saturday
  })

  it('says where and when in its detail, inside or out', () => {
    const h = hours('Mon-Fri 08:00-18:00', 'Europe/Berlin')
    expect(judgeHours(h, utc(2027, 1, 18, 18, 4))).toEqual({ inside: false, detail: 'at Mon 19:04 Europe/Berlin, outside Mon-Fri 08:00-18:00' })
    expect(judgeHours(h, utc(2027, 1, 18, 8, 4))).toEqual({ inside: true, detail: 'at Mon 09:04 Europe/Berlin, inside Mon-Fri 08:00-18:00' })
  })

  it('takes 24:00 as the end of the day: the last minute is inside, midnight starts the next day', () => {
    const h = 'Sat 09:00-24:00'
    expect(inside(h, utc(2027, 1, 23, 23, 59))).toBe(true)
    expect(inside(h, utc(2027, 1, 24, 0, 0))).toBe(false) // Sunday 00:00
    expect(parseHours(h)![0]!.to).toBe(24 * 60)
  })

  it('wraps a day range across the week’s end (Fri-Mon), and never includes the days it skips', () => {
    const h = 'Fri-Mon 20:00-24:00'
    for (const day of [22, 23, 24, 25]) expect(inside(h, utc(2027, 1, day, 21)), `day ${day}`).toBe(true)
    for (const day of [19, 20, 21]) expect(inside(h, utc(2027, 1, day, 21)), `day ${day}`).toBe(false)
    expect(inside(h, utc(2027, 1, 22, 19, 59))).toBe(false)
  })

  it('holds several entries: inside any one of them', () => {
    const h = 'Mon-Fri 08:00-12:00, Mon-Fri 13:00-17:00, Sat 10:00-11:00'
    expect(inside(h, utc(2027, 1, 18, 12, 30))).toBe(false)
    expect(inside(h, utc(2027, 1, 18, 13, 0))).toBe(true)
    expect(inside(h, utc(2027, 1, 23, 10, 30))).toBe(true)
  })

  it('reads the wall clock across the change to summer time (Europe/Berlin, 2027-03-28) and back (2027-10-31)', () => {
    const h = 'Sun 08:00-18:00'
    // Summer time that Sunday: 06:30 UTC is 08:30 local (it would be 07:30 in winter time), 16:30 UTC is 18:30.
    expect(judgeHours(hours(h, 'Europe/Berlin'), utc(2027, 3, 28, 6, 30)).detail).toBe('at Sun 08:30 Europe/Berlin, inside Sun 08:00-18:00')
    expect(inside(h, utc(2027, 3, 28, 16, 30), 'Europe/Berlin')).toBe(false)
    expect(inside(h, utc(2027, 3, 21, 6, 30), 'Europe/Berlin')).toBe(false) // the Sunday before: 07:30 CET
    // Back to winter time: 07:30 UTC is 08:30 CET, 06:30 UTC is 07:30.
    expect(inside(h, utc(2027, 10, 31, 7, 30), 'Europe/Berlin')).toBe(true)
    expect(inside(h, utc(2027, 10, 31, 6, 30), 'Europe/Berlin')).toBe(false)
    // The hour that does not exist (02:00-03:00 on 2027-03-28) is never inside a window that lies in it.
    expect(inside('Sun 02:00-03:00', utc(2027, 3, 28, 0, 59), 'Europe/Berlin')).toBe(false) // 01:59 CET
    expect(inside('Sun 02:00-03:00', utc(2027, 3, 28, 1, 0), 'Europe/Berlin')).toBe(false) // 03:00 CEST
  })
})

describe('localTime', () => {
  it('reads each minute afresh, whatever it read last, in any zone (it keeps the last minute read per zone)', () => {
    const t = utc(2027, 3, 28, 0, 59) // 01:59 CET; the next minute is 03:00 CEST
    expect(localTime(t, 'Europe/Berlin').text).toBe('Sun 01:59')
    expect(localTime(t + 59, 'Europe/Berlin').text).toBe('Sun 01:59')
    expect(localTime(t + 60, 'Europe/Berlin').text).toBe('Sun 03:00')
    expect(localTime(t + 60, 'Asia/Kolkata').text).toBe('Sun 06:30')
    expect(localTime(t, 'Europe/Berlin').text).toBe('Sun 01:59')
    expect(localTime(t - 0.5, 'Europe/Berlin').text).toBe('Sun 01:58')
    expect(localTime(t + 60, 'Europe/Berlin')).toEqual({ weekday: 0, minutes: 180, text: 'Sun 03:00' })
  })
})

describe('weekMinutes', () => {
  it('covers each entry’s minutes, Sunday 00:00 first', () => {
    const w = weekMinutes(hours('Sun 00:00-00:01, Sat 23:59-24:00'))
    expect(w.length).toBe(7 * 1440)
    expect([w[0], w[1], w[7 * 1440 - 1], w[7 * 1440 - 2]]).toEqual([1, 0, 1, 0])
  })
})
