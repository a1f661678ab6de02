/**
 * The console's one stylesheet and one script, served by the broker itself
 * (no CDN; the Content-Security-Policy allows only this origin's files and
 * no inline script or style). Kept here as text so that the build needs no
 * bundler; each is addressed by a hash of its content, so a browser may
 * cache it for a year and an upgrade is fetched anew.
 *
 * The script only enhances: every page works without it (forms post, links
 * load). With it: live events (kills, lifts, quarantines, denial bursts) from
 * `/console/events` appear without a reload, tables sort by a column, and a
 * kill's propagation status refreshes itself.
 */
import { createHash } from 'node:crypto'

const CSS = `
:root { --fg: #1b1f24; --muted: #57606a; --bg: #fff; --panel: #f6f8fa; --line: #d0d7de; --accent: #0a5bc4;
  --danger: #b42318; --danger-bg: #fdecea; --ok: #116329; --ok-bg: #e6f4ea; --warn: #8a5a00; --warn-bg: #fff4d6; --info-bg: #e8f0fe; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
a { color: var(--accent); }
a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible, textarea:focus-visible, summary:focus-visible { outline: 3px solid #f59e0b; outline-offset: 2px; }
.skip { position: absolute; left: -999px; top: 0; background: var(--fg); color: #fff; padding: .5rem 1rem; }
.skip:focus { left: 0; z-index: 10; }
header.top { display: flex; align-items: center; gap: 1.5rem; padding: .5rem 1.5rem; background: #0d1117; color: #fff; flex-wrap: wrap; }
header.top a { color: #fff; text-decoration: none; }
header.top .brand { font-weight: 700; font-size: 1.1rem; letter-spacing: .02em; }
header.top nav ul { display: flex; gap: 1rem; list-style: none; margin: 0; padding: 0; }
header.top nav a { padding: .25rem .5rem; border-radius: 4px; }
header.top nav a[aria-current="page"] { background: #30363d; }
header.top .who { margin-left: auto; display: flex; align-items: center; gap: .75rem; font-size: .9rem; }
header.top .who form { margin: 0; }
header.top .who button { background: transparent; color: #fff; border: 1px solid #6e7681; border-radius: 4px; padding: .2rem .6rem; cursor: pointer; font: inherit; }
main { padding: 1rem 1.5rem 3rem; max-width: 1400px; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; }
h2 { font-size: 1.15rem; margin: 1.5rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; font-size: .92rem; }
caption { text-align: left; color: var(--muted); padding: .25rem 0; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--panel); font-weight: 600; white-space: nowrap; }
th button.sort { background: none; border: 0; font: inherit; font-weight: 600; cursor: pointer; padding: 0; color: inherit; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.id { white-space: nowrap; }
tbody tr:hover { background: #f9fbfd; }
.badge { display: inline-block; padding: 0 .5rem; border-radius: 999px; font-size: .8rem; font-weight: 600; border: 1px solid transparent; white-space: nowrap; }
.badge.active { background: var(--ok-bg); color: var(--ok); }
.badge.killed, .badge.quarantined, .badge.denied, .badge.expired-badge { background: var(--danger-bg); color: var(--danger); }
.badge.expiring, .badge.overdue, .badge.pending, .badge.dormant, .badge.suspended { background: var(--warn-bg); color: var(--warn); }
.badge.neutral, .badge.lifted, .badge.expired, .badge.retired { background: var(--panel); color: var(--muted); border-color: var(--line); }
.badge.approved, .badge.issued, .badge.verified { background: var(--ok-bg); color: var(--ok); }
.muted { color: var(--muted); }
.mono, code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .88rem; }
pre { background: var(--panel); border: 1px solid var(--line); padding: .75rem; overflow-x: auto; border-radius: 4px; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: .75rem 1rem; margin: .75rem 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 1rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
form.search { display: flex; gap: .5rem; flex-wrap: wrap; align-items: end; margin: 0 0 1rem; }
form.search label { display: flex; flex-direction: column; font-size: .85rem; color: var(--muted); }
input, select, textarea { font: inherit; padding: .35rem .5rem; border: 1px solid #8c959f; border-radius: 4px; background: #fff; color: var(--fg); }
textarea { width: 100%; min-height: 5rem; }
button, .button { font: inherit; padding: .4rem 1rem; border-radius: 4px; border: 1px solid #8c959f; background: #fff; color: var(--fg); cursor: pointer; text-decoration: none; display: inline-block; }
button.primary, .button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
button.danger, .button.danger { background: var(--danger); border-color: var(--danger); color: #fff; }
.actions { display: flex; gap: .75rem; flex-wrap: wrap; align-items: center; margin: .75rem 0; }
.notice { padding: .6rem 1rem; border-radius: 4px; margin: .75rem 0; border: 1px solid var(--line); }
.notice.error { background: var(--danger-bg); border-color: #f1aeb5; color: #7a1212; }
.notice.ok { background: var(--ok-bg); border-color: #a6d8b2; color: #0f5323; }
.notice.warn { background: var(--warn-bg); border-color: #f0d58a; color: #5c3c00; }
.notice.info { background: var(--info-bg); border-color: #b6ccf5; }
svg.spark { vertical-align: middle; }
svg.spark polyline { fill: none; stroke: var(--accent); stroke-width: 1.5; }
.live { position: fixed; right: 1rem; bottom: 1rem; width: 22rem; max-height: 40vh; overflow-y: auto; display: flex; flex-direction: column; gap: .5rem; }
.live .event { background: #fff; border: 1px solid var(--line); border-left: 4px solid var(--accent); border-radius: 4px; padding: .5rem .75rem; box-shadow: 0 2px 6px rgba(0,0,0,.12); font-size: .9rem; }
.live .event.kill, .live .event.quarantine, .live .event.denials { border-left-color: var(--danger); }
.live .event.lift { border-left-color: var(--ok); }
.signin { max-width: 32rem; margin: 3rem auto; }
.signin ul { list-style: none; padding: 0; display: flex; flex-direction: column; gap: .5rem; }
.signin button { width: 100%; text-align: left; }
.diff .add { background: var(--ok-bg); color: #0f5323; display: block; }
.diff .del { background: var(--danger-bg); color: #7a1212; display: block; }
svg.graph { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
svg.graph .node rect { fill: #fff; stroke: #57606a; stroke-width: 1.5; }
svg.graph .node.user rect { fill: var(--info-bg); }
svg.graph .node.killed rect { stroke: var(--danger); stroke-width: 2.5; }
svg.graph .node text { fill: var(--fg); font-size: 13px; }
svg.graph .node text.sub { fill: var(--muted); font-size: 11px; }
svg.graph .edge { fill: none; stroke: #8c959f; stroke-width: 1.5; }
svg.graph a:focus rect { stroke: #f59e0b; stroke-width: 3; }
/* Chains and Audit pages */
svg.graph .node text.title { font-weight: 600; }
svg.graph .node text.state { font-size: 11px; font-weight: 700; fill: var(--ok); }
svg.graph .node.killed rect, svg.graph .node.revoked rect { stroke: var(--danger); stroke-width: 2.5; fill: var(--danger-bg); }
svg.graph .node.killed text.state, svg.graph .node.revoked text.state { fill: var(--danger); }
svg.graph .node.expired rect, svg.graph .node.withheld rect { stroke-dasharray: 5 3; }
svg.graph .node.expired text.state, svg.graph .node.withheld text.state { fill: var(--muted); }
svg.graph a:hover rect { stroke: var(--accent); }
svg.graph .node.asked rect { stroke: var(--accent); stroke-width: 3; }
.graph-scroll { overflow-x: auto; }
ul.tree { list-style: none; margin: .25rem 0; padding-left: 1.25rem; border-left: 2px solid var(--line); }
ul.tree .token { padding: .25rem 0 .5rem; }
ul.tree li:target > .token { background: var(--info-bg); }
/* Agent, Kill and Kills pages */
form.kill fieldset { border: 1px solid var(--line); border-radius: 6px; margin: 0 0 1rem; padding: .5rem 1rem 1rem; }
form.kill legend { font-weight: 600; padding: 0 .25rem; }
form.kill label.choice { display: block; margin: .25rem 0; }
form.kill .fields { display: grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr)); gap: .5rem 1rem; }
form.kill .fields label { display: flex; flex-direction: column; font-size: .85rem; color: var(--muted); }
form.kill > label { font-weight: 600; display: block; margin-top: .5rem; }
.diff .ctx { display: block; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`

const JS = `
'use strict'
;(function () {
  // Live events: new kills, lifts, quarantines and denial bursts, shown as they happen.
  var live = document.getElementById('live')
  if (live && window.EventSource) {
    var source = new EventSource('/console/events')
    var show = function (kind) {
      return function (e) {
        var data
        try { data = JSON.parse(e.data) } catch (err) { return }
        var box = document.createElement('div')
        box.className = 'event ' + kind
        var text = document.createElement(data.href ? 'a' : 'span')
        text.textContent = data.text || kind
        if (data.href) text.href = data.href
        box.appendChild(text)
        live.prepend(box)
        while (live.children.length > 8) live.removeChild(live.lastChild)
        document.dispatchEvent(new CustomEvent('mandate:' + kind, { detail: data }))
      }
    }
    ;['kill', 'lift', 'quarantine', 'denials', 'approval'].forEach(function (k) { source.addEventListener(k, show(k)) })
    // Marks the region while the stream is open (the broker's first event says so), unmarks it when it drops.
    source.addEventListener('ready', function () { live.setAttribute('data-connected', '') })
    source.addEventListener('error', function () { live.removeAttribute('data-connected') })
  }

  // Sortable tables: a header's button sorts the rows by that column (numbers as numbers).
  document.querySelectorAll('table[data-sortable]').forEach(function (table) {
    var heads = table.querySelectorAll('thead th')
    heads.forEach(function (th, i) {
      var label = th.textContent
      var button = document.createElement('button')
      button.type = 'button'
      button.className = 'sort'
      button.textContent = label
      th.textContent = ''
      th.appendChild(button)
      th.setAttribute('aria-sort', 'none')
      button.addEventListener('click', function () {
        var asc = th.getAttribute('aria-sort') !== 'ascending'
        heads.forEach(function (h) { h.setAttribute('aria-sort', 'none') })
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending')
        var body = table.tBodies[0]
        var rows = Array.prototype.slice.call(body.rows)
        var key = function (row) {
          var cell = row.cells[i]
          var v = cell ? (cell.getAttribute('data-sort') || cell.textContent.trim()) : ''
          var n = Number(v)
          return v !== '' && !isNaN(n) ? n : v.toLowerCase()
        }
        rows.sort(function (a, b) {
          var x = key(a), y = key(b)
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1)
        })
        rows.forEach(function (r) { body.appendChild(r) })
      })
    })
  })

  // A part of the page that refreshes itself (a kill's propagation): re-fetched from the same URL while it says so.
  var refreshing = document.querySelector('[data-refresh]')
  if (refreshing) {
    var every = Number(refreshing.getAttribute('data-refresh')) || 2000
    var tick = function () {
      fetch(location.href, { headers: { accept: 'text/html' }, credentials: 'same-origin' })
        .then(function (r) { return r.text() })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, 'text/html')
          var fresh = doc.querySelector('[data-refresh]')
          var now = document.querySelector('[data-refresh]')
          if (fresh && now) now.replaceWith(fresh)
          if (fresh) setTimeout(tick, every)
          else if (now) now.removeAttribute('data-refresh')
        })
        .catch(function () { setTimeout(tick, every * 2) })
    }
    setTimeout(tick, every)
  }
})()
`

const hashOf = (text: string) => createHash('sha256').update(text).digest('base64url').slice(0, 12)

export interface ConsoleAsset {
  /** Its URL, with the content hash. */
  readonly path: string
  readonly type: string
  readonly body: string
}

export const CONSOLE_CSS: ConsoleAsset = { path: `/console/assets/console.${hashOf(CSS)}.css`, type: 'text/css; charset=utf-8', body: CSS }
export const CONSOLE_JS: ConsoleAsset = { path: `/console/assets/console.${hashOf(JS)}.js`, type: 'text/javascript; charset=utf-8', body: JS }
