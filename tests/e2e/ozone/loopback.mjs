// Keep the Ozone test network on this machine: every server on 127.0.0.1, no socket to anywhere
// but loopback. The guard of the PDS harness (../pds/loopback-only.mjs) refuses outbound
// connections beyond loopback and puts 127.0.0.1 in a listen() that names no host; it refuses a
// listen() on any other host by throwing. dev-env cannot live with that last part: it finds free
// ports with the `get-port` package, which probes each port on 0.0.0.0 and on every interface
// address and takes only EADDRINUSE-like errors as answers. So here such a host is rewritten to
// 127.0.0.1 first (a probe then checks loopback, which is where the server will listen), as is
// a listen() with no port at all.

import net from 'node:net'

import { installLoopbackGuard, isLoopbackHost } from '../pds/loopback-only.mjs'

export function installLoopbackOnly({ bindHost = '127.0.0.1' } = {}) {
  installLoopbackGuard({ bindHost })
  const guardedListen = net.Server.prototype.listen
  net.Server.prototype.listen = function listenOnLoopbackOnly(...args) {
    const first = args[0]
    if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
      if (typeof args[1] === 'string' && !isLoopbackHost(args[1])) args[1] = bindHost
    } else if (first && typeof first === 'object' && first.port !== undefined) {
      if (first.host !== undefined && !isLoopbackHost(first.host)) args[0] = { ...first, host: bindHost }
    } else if (first === undefined || typeof first === 'function') {
      args.unshift(0, bindHost) // listen() / listen(cb): a random port, on loopback
    }
    return guardedListen.apply(this, args)
  }
}
