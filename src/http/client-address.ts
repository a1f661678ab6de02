import type { IncomingMessage } from 'node:http'
import { BlockList, isIP } from 'node:net'
import type { Context } from 'hono'

/** `::ffff:192.0.2.1` (an IPv4 peer of a dual-stack socket) → `192.0.2.1`. */
export function unmapIPv4(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address
}

function trustedList(entries: readonly string[]): BlockList {
  const list = new BlockList()
  for (const entry of entries) {
    const [address, bits] = entry.split('/') as [string, string | undefined]
    const type = isIP(address) === 6 ? 'ipv6' : 'ipv4'
    if (bits === undefined) list.addAddress(address, type)
    else list.addSubnet(address, Number(bits), type)
  }
  return list
}

/**
 * How the caller's address is found: the socket's peer, or, when the peer is
 * one of `trustedProxies` (addresses or CIDR blocks, as the config schema
 * validated them), the nearest X-Forwarded-For hop that is not a trusted
 * proxy. Each proxy appends the address it received from, so only hops
 * right of the first untrusted one were written by proxies that are trusted;
 * anything left of it is the client's to invent and is ignored. Undefined
 * when there is no socket (an in-process `app.request`).
 */
export function clientAddressResolver(trustedProxies: readonly string[]): (c: Context) => string | undefined {
  const peer = (c: Context) => {
    const address = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming?.socket.remoteAddress
    return address === undefined ? undefined : unmapIPv4(address)
  }
  if (trustedProxies.length === 0) return peer
  const trusted = trustedList(trustedProxies)
  const isTrusted = (address: string) => trusted.check(address, isIP(address) === 6 ? 'ipv6' : 'ipv4')
  return (c) => {
    const socket = peer(c)
    if (socket === undefined || !isTrusted(socket)) return socket
    const forwarded = c.req.header('x-forwarded-for')
    if (forwarded === undefined) return socket
    const hops = forwarded.split(',')
    let nearest = socket
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = unmapIPv4(hops[i]!.trim())
      // A hop that is not an address was not written by a proxy worth believing: stop at the last good one.
      if (isIP(hop) === 0) return nearest
      if (!isTrusted(hop)) return hop
      nearest = hop
    }
    return nearest
  }
}
