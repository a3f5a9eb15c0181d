"""HTTP load for the AppView benchmarks: the servers they start (hello-world, a loopback PLC
holding viewers' keys, `plyr serve`) and the load generators.

Load comes from wrk (Debian package `wrk`, one thread) when it is installed: one URL, or a file
of pre-drawn requests replayed in order by a small Lua script. Without wrk, a small aiohttp
client loop stands in (fewer requests/s, so only good for checking that a benchmark runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from tests.support.bench_setup import child_env

PY = sys.executable

HELLO_SERVER = """
import sys, uvloop
from aiohttp import web
async def hello(_r): return web.Response(text="Hello, world")
app = web.Application(); app.router.add_get("/", hello)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

PLC_SERVER = """
import sys, orjson
from aiohttp import web
docs = orjson.loads(sys.stdin.buffer.read())
async def doc(request):
    d = docs.get(request.match_info["did"])
    return web.json_response(d) if d else web.Response(status=404)
app = web.Application(); app.router.add_get("/{did}", doc)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

# Replays the request file given as its argument, one line per request: a path, then a tab
# and a bearer token for an authenticated viewer (or nothing).
REPLAY_LUA = """
local requests = {}
local next_index = 0
function init(args)
  for line in io.lines(args[1]) do
    local path, token = line:match("^([^\\t]*)\\t?(.*)$")
    local headers = {}
    if token ~= "" then headers["Authorization"] = "Bearer " .. token end
    requests[#requests + 1] = wrk.format("GET", path, headers)
  end
end
function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
"""

# wrk leaves answers slower than this out of its latencies (counted as timeouts): well above
# any answer of a working server, so that a slow one shows in p99 rather than vanishing.
TIMEOUT_S = 10

# The service DID the AppView is started with: viewers' tokens name it as their audience.
SERVICE_DID = "did:web:127.0.0.1"


@dataclass(frozen=True)
class Request:
    path: str
    token: str = ""  # a viewer's service-auth JWT, or "" for an anonymous request


@dataclass(frozen=True)
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int  # connections that failed: connect, read or write
    timeouts: int  # answers slower than the load generator waits (TIMEOUT_S); not in p50/p99
    tool: str

    @property
    def failed(self) -> bool:
        """Answers that were wrong or connections that broke (slow answers are a result)."""
        return bool(self.non_2xx or self.socket_errors)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)  # `plyr serve --workers` first stops its workers
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_hello() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([PY, "-c", HELLO_SERVER, str(port)])
    url = f"http://127.0.0.1:{port}/"
    wait_http(url)
    return proc, url


class Viewers:
    """Signing keys for viewer DIDs (their likes come from the seeded index) and a loopback
    PLC directory serving their DID documents, so the AppView can check their tokens."""

    def __init__(self, dids: Sequence[str]) -> None:
        from protocol.crypto import PrivateKey

        self.keys = {did: PrivateKey.generate("k256") for did in dids}
        self.plc_url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start_plc(self) -> str:
        docs = {did: {"id": did, "verificationMethod": [{
            "id": did + "#atproto", "type": "Multikey", "controller": did,
            "publicKeyMultibase": key.public_key().multibase()}]}
            for did, key in self.keys.items()}  # fmt: skip
        port = free_port()
        self._proc = subprocess.Popen([PY, "-c", PLC_SERVER, str(port)], stdin=subprocess.PIPE)
        assert self._proc.stdin is not None
        self._proc.stdin.write(orjson.dumps(docs))
        self._proc.stdin.close()
        self.plc_url = f"http://127.0.0.1:{port}"
        wait_http(f"{self.plc_url}/{next(iter(self.keys))}")
        return self.plc_url

    def token(self, did: str, method: str) -> str:
        """A service-auth JWT of `did` for one XRPC method, valid for the benchmark's hour."""
        from protocol.service_auth import create_service_jwt

        return create_service_jwt(self.keys[did], iss=did, aud=SERVICE_DID + "#plyr_appview",
                                  lxm=method, exp_in=3600)

    def stop(self) -> None:
        if self._proc is not None:
            stop(self._proc)


def start_appview(db_url: str, plc_url: str, *, microcache: float, coalesce: bool = True,
                  pool_max: int = 4, workers: int = 1, read_urls: str = "",
                  settings: dict[str, str] | None = None,
                  ) -> tuple[subprocess.Popen[bytes], str]:
    """`plyr serve` in its own process on a free port (`workers` processes sharing it, reading
    from the replicas `read_urls`, with more PLYR_* `settings`); returns it and its base URL."""
    port = free_port()
    env = child_env(
        DATABASE_URL=db_url, PLYR_APPVIEW_PORT=str(port), PLYR_PLC_URL=plc_url,
        PLYR_SERVICE_DID=SERVICE_DID,
        PLYR_PUBLIC_URL="http://127.0.0.1",  # the DID's host (a did:web must name ours)
        PLYR_APPVIEW_MICROCACHE_SECONDS=str(microcache),
        PLYR_APPVIEW_COALESCE="1" if coalesce else "0",
        PLYR_DB_POOL_MAX=str(pool_max),  # 2 cores: fewer, busier connections
        PLYR_APPVIEW_WORKERS=str(workers), PLYR_DATABASE_READ_URLS=read_urls,
        **(settings or {}),
    )  # fmt: skip
    proc = subprocess.Popen([PY, "-m", "plyr", "serve", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health")
        if workers > 1:
            _wait_workers_listening(proc.pid, port, workers)
    except RuntimeError:
        stop(proc)
        raise
    return proc, base


def _wait_workers_listening(parent: int, port: int, count: int) -> None:
    """Until `count` child processes of `parent` listen on `port` (all workers up)."""
    import psutil

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listening = 0
        for child in psutil.Process(parent).children():
            with contextlib.suppress(psutil.Error):
                if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                       for c in child.net_connections(kind="tcp")):
                    listening += 1
        if listening >= count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"fewer than {count} AppView workers listening on {port}")


# ---- load generators ---------------------------------------------------------------------------


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def load(base: str, requests: Sequence[Request], *, duration: float, connections: int,
         use_wrk: bool | None = None) -> LoadResult:
    """Send `requests` (cycled, in order) to `base` for `duration` seconds over `connections`
    connections; wrk when installed unless use_wrk is False."""
    if use_wrk is None:
        use_wrk = have_wrk()
    if use_wrk:
        return _wrk(base, requests, duration, connections)
    return asyncio.run(_aiohttp_loop(base, requests, duration, connections))


def _wrk(base: str, requests: Sequence[Request], duration: float, connections: int) -> LoadResult:
    with tempfile.TemporaryDirectory() as tmp:
        script, lines = Path(tmp) / "replay.lua", Path(tmp) / "requests.tsv"
        script.write_text(REPLAY_LUA)
        lines.write_text("".join(f"{r.path}\t{r.token}\n" for r in requests))
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
               f"--timeout={TIMEOUT_S}s",
               "-s", str(script), base, "--", str(lines)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> LoadResult:
    def field(pattern: str) -> str:
        match = re.search(pattern, out)
        if match is None:
            raise RuntimeError(f"unexpected wrk output (no {pattern!r}):\n{out}")
        return match.group(1)

    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    connect, read, write, timeouts = map(int, errors.groups()) if errors else (0, 0, 0, 0)
    return LoadResult(
        rps=float(field(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=_milliseconds(field(r"\s50%\s+(\S+)")),
        p99_ms=_milliseconds(field(r"\s99%\s+(\S+)")),
        requests=int(field(r"(\d+) requests in")),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=connect + read + write,
        timeouts=timeouts,
        tool="wrk",
    )


def _milliseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise RuntimeError(f"unexpected wrk latency {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


async def _aiohttp_loop(base: str, requests: Sequence[Request], duration: float,
                        connections: int) -> LoadResult:
    import aiohttp

    latencies: list[float] = []
    statuses = {"non_2xx": 0, "errors": 0, "timeouts": 0}
    cursor = iter(range(sys.maxsize))
    deadline = time.perf_counter() + duration

    async def client(session: aiohttp.ClientSession) -> None:
        while (now := time.perf_counter()) < deadline:
            req = requests[next(cursor) % len(requests)]
            headers = {"Authorization": f"Bearer {req.token}"} if req.token else {}
            try:
                async with session.get(base + req.path, headers=headers) as resp:
                    await resp.read()
                    if not 200 <= resp.status < 400:
                        statuses["non_2xx"] += 1
            except TimeoutError:
                statuses["timeouts"] += 1
                continue
            except aiohttp.ClientError:
                statuses["errors"] += 1
                continue
            latencies.append(time.perf_counter() - now)

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    if len(latencies) < 2:
        raise RuntimeError(f"no answers from {base} ({statuses['errors']} client errors)")
    cuts = statistics.quantiles(latencies, n=100)
    return LoadResult(
        rps=len(latencies) / elapsed, p50_ms=cuts[49] * 1000, p99_ms=cuts[98] * 1000,
        requests=len(latencies) + statuses["errors"] + statuses["timeouts"],
        non_2xx=statuses["non_2xx"], socket_errors=statuses["errors"],
        timeouts=statuses["timeouts"], tool="aiohttp",
    )  # fmt: skip


def table(rows: Sequence[tuple[str, LoadResult]], hello: LoadResult) -> str:
    """The figures as a plain table, requests/s also as a share of the hello-world's."""
    lines = [f"{'path':<52} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'% hello':>8}"
             f"  non-2xx  errors  >{TIMEOUT_S}s"]
    for name, r in rows:
        lines.append(f"{name:<52} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
                     f"{100 * r.rps / hello.rps:>7.0f}%  {r.non_2xx:>7} {r.socket_errors:>7} {r.timeouts:>5}")
    return "\n".join(lines)

