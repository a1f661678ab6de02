/** What the HTTP layer needs of SET delivery: the poll endpoint (RFC 8936) and the transmitter's metadata. */

/** A poll request (RFC 8936 §2.4), validated. */
export interface PollRequest {
  /** 0: acknowledge only. */
  readonly maxEvents: number
  readonly returnImmediately: boolean
  readonly ack: readonly string[]
  /** jti → error code and description (RFC 8936 §2.4.2, RFC 8935 §2.3). */
  readonly setErrs: ReadonlyMap<string, { readonly err: string; readonly description: string }>
}

export interface PollAnswer {
  /** jti → SET. */
  readonly sets: Readonly<Record<string, string>>
  readonly moreAvailable: boolean
}

export interface SetPoller {
  /**
   * Acknowledges, records errors, then answers the receiver's pending SETs
   * (oldest first), waiting up to the long-poll bound for one when none is
   * pending and `returnImmediately` is false; ends the wait early on `signal`.
   * Undefined when no poll receiver is polled by `resourceServer`. Rejects
   * when the database fails.
   */
  poll(resourceServer: string, request: PollRequest, signal: AbortSignal): Promise<PollAnswer | undefined>
}
