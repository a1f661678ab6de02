/** One dispatched server-sent event. */
export interface SseEvent {
  /** `message` when the stream named none. */
  readonly event: string
  readonly data: string
  /** The `id` field of this event, when it had one. */
  readonly id: string | undefined
}

/**
 * Incremental `text/event-stream` parser (WHATWG HTML "Server-sent events",
 * §9.2.6): lines end in CRLF, LF or CR (also split across chunks), `:` starts
 * a comment, one leading space of a value is dropped, an event is dispatched
 * at a blank line when it has data. Throws `RangeError` when a line outgrows
 * `maxLineBytes` (a snapshot is one line; the bound keeps a broken peer from
 * growing it forever).
 */
export class SseParser {
  /** The line in progress, in pieces (a snapshot line spans many chunks: no quadratic rescans). */
  private partial: string[] = []
  private partialLength = 0
  /** The last chunk ended in CR: a LF opening the next one belongs to it. */
  private skipLf = false
  private data: string[] = []
  private event = ''
  private id: string | undefined
  /** Set by a `retry` field. */
  retryMs: number | undefined

  constructor(
    private readonly onEvent: (event: SseEvent) => void,
    private readonly maxLineBytes = 64 * 1024 * 1024,
  ) {}

  push(chunk: string): void {
    let pos = 0
    if (this.skipLf && chunk.startsWith('\n')) pos = 1
    this.skipLf = false
    for (let i = pos; i < chunk.length; i++) {
      const ch = chunk.charCodeAt(i)
      if (ch !== 10 && ch !== 13) continue
      const tail = chunk.slice(pos, i)
      const line = this.partial.length === 0 ? tail : this.partial.join('') + tail
      this.partial = []
      this.partialLength = 0
      if (ch === 13) {
        if (i + 1 === chunk.length) this.skipLf = true
        else if (chunk.charCodeAt(i + 1) === 10) i++
      }
      pos = i + 1
      this.line(line)
    }
    if (pos < chunk.length) {
      this.partial.push(chunk.slice(pos))
      this.partialLength += chunk.length - pos
      if (this.partialLength > this.maxLineBytes) throw new RangeError('server-sent event line too long')
    }
  }

  private line(line: string): void {
    if (line === '') return this.dispatch()
    if (line.startsWith(':')) return
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    switch (field) {
      case 'event':
        this.event = value
        break
      case 'data':
        this.data.push(value)
        break
      case 'id':
        if (!value.includes('\u0000')) this.id = value
        break
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.retryMs = Number(value)
        break
      default:
        break
    }
  }

  private dispatch(): void {
    const { data, event, id } = this
    this.data = []
    this.event = ''
    this.id = undefined
    if (data.length === 0) return
    this.onEvent({ event: event === '' ? 'message' : event, data: data.join('\n'), id })
  }
}
