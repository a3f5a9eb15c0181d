// Keep a test network on this machine: every server binds 127.0.0.1, and no socket may connect
// anywhere but loopback. @atproto/pds and @did-plc/server call `app.listen(port)`, which binds
// every interface, and a misconfigured PDS would happily call out (PLC directory, crawlers,
// AppView): both are stopped here, before those modules create anything.

import net from 'node:net'

const LOOPBACK_NAMES = new Set(['localhost', 'ip6-localhost', 'ip6-loopback'])

// True for 127.0.0.0/8, ::1 (any spelling net.isIP accepts), ::ffff:127.x and localhost names.
export function isLoopbackHost(host) {
  if (typeof host !== 'string' || host === '') return false
  const h = host.toLowerCase().replace(/^\[|\]$/g, '')
  if (LOOPBACK_NAMES.has(h) || h.endsWith('.localhost')) return true
  if (net.isIPv4(h)) return h.split('.')[0] === '127'
  if (net.isIPv6(h)) {
    if (h.startsWith('::ffff:')) return isLoopbackHost(h.slice('::ffff:'.length))
    // Normalise by letting a BlockList compare it with ::1.
    const ones = new net.BlockList()
    ones.addAddress('::1', 'ipv6')
    return ones.check(h, 'ipv6')
  }
  return false
}

// The host a net.Socket#connect call targets, or null for a unix socket / fd / missing host.
function connectTarget(args) {
  const first = Array.isArray(args[0]) ? args[0][0] : args[0] // internal normalized form
  if (first && typeof first === 'object') {
    if (first.path !== undefined || first.fd !== undefined) return null
    return first.host ?? 'localhost' // node's default host is localhost
  }
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    return typeof args[1] === 'string' ? args[1] : 'localhost'
  }
  return null // a path string: unix socket
}

export function installLoopbackGuard({ bindHost = '127.0.0.1' } = {}) {
  const origListen = net.Server.prototype.listen
  net.Server.prototype.listen = function listenOnLoopback(...args) {
    const first = args[0]
    if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
      // listen(port[, host][, backlog][, cb]): put our host in when none is given.
      if (typeof args[1] !== 'string') args.splice(1, 0, bindHost)
      else if (!isLoopbackHost(args[1])) throw new Error(`refusing to listen on ${args[1]}`)
    } else if (first && typeof first === 'object' && first.port !== undefined) {
      if (first.host === undefined) args[0] = { ...first, host: bindHost }
      else if (!isLoopbackHost(first.host)) throw new Error(`refusing to listen on ${first.host}`)
    }
    return origListen.apply(this, args)
  }

  const origConnect = net.Socket.prototype.connect
  net.Socket.prototype.connect = function connectToLoopbackOnly(...args) {
    const host = connectTarget(args)
    if (host !== null && !isLoopbackHost(host)) {
      // Fail like a refused connection, asynchronously, so callers' error paths handle it.
      const err = Object.assign(new Error(`test network is loopback-only: refused ${host}`), {
        code: 'ECONNREFUSED',
      })
      process.nextTick(() => this.destroy(err))
      return this
    }
    return origConnect.apply(this, args)
  }
}
