#!/usr/bin/env python3
"""Many PostgreSQL clients at once, for the scale figures of scripts/bench.sh.

pgbench cannot hold thousands of mostly idle sessions, so this speaks the wire protocol
itself (StartupMessage, cleartext password, simple Query) over asyncio sockets. Three modes,
each printing one JSON object on stdout:

  idle  --clients N  connect N sessions, keep them open, read the daemon's RSS from /proc
  load  --clients N  connect N sessions, then each runs a light query now and then
  auth  --clients N  connect, authenticate and leave, N times, timed

Tenants come from a JSON file: a list of {"db", "schema", "user", "password"} objects;
sessions take them in turn. Every wait is bounded (--deadline); nothing here sleeps to
synchronise.
"""

import argparse
import asyncio
import json
import random
import resource
import struct
import sys
import time


class PgError(Exception):
    """The server refused or broke the conversation."""


def startup_message(t):
    params = [
        ("user", t["user"]),
        ("database", t["db"]),
        ("options", "-c search_path=" + t["schema"]),
        ("application_name", "perseus-bench"),
    ]
    body = struct.pack("!i", 196608)
    for k, v in params:
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def message(tag, payload):
    return tag + struct.pack("!i", len(payload) + 4) + payload


def error_text(payload):
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return "%s %s" % (fields.get("C", "?"), fields.get("M", "?"))


async def read_message(reader):
    head = await reader.readexactly(5)
    tag, length = head[:1], struct.unpack("!i", head[1:])[0]
    if length < 4 or length > 1 << 24:
        raise PgError("bad message length %d" % length)
    return tag, await reader.readexactly(length - 4)


async def until_ready(reader):
    """Reads up to ReadyForQuery; an ErrorResponse on the way is raised after it."""
    err = None
    while True:
        tag, payload = await read_message(reader)
        if tag == b"Z":
            if err:
                raise PgError(err)
            return
        if tag == b"E":
            err = error_text(payload)


class Session:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host, port, tenant):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(startup_message(tenant))
            while True:
                tag, payload = await read_message(reader)
                if tag == b"E":
                    raise PgError(error_text(payload))
                if tag != b"R":
                    raise PgError("expected authentication, got %r" % tag)
                code = struct.unpack("!i", payload[:4])[0]
                if code == 0:
                    break
                if code != 3:
                    raise PgError("unsupported authentication request %d" % code)
                writer.write(message(b"p", tenant["password"].encode() + b"\0"))
            await until_ready(reader)
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer)

    async def query(self, sql):
        self.writer.write(message(b"Q", sql.encode() + b"\0"))
        await until_ready(self.reader)

    def close(self):
        try:
            self.writer.write(message(b"X", b""))
            self.writer.close()
        except Exception:
            pass


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < need:
            sys.exit("open-file limit %d is below the %d sockets needed: raise ulimit -n" % (hard, need))


async def open_many(args, tenants, n):
    """Opens n sessions with at most args.concurrency logins in flight; errors are counted."""
    sessions, errors = [], {}
    gate = asyncio.Semaphore(args.concurrency)

    async def one(i):
        async with gate:
            try:
                s = await Session.open(args.host, args.port, tenants[i % len(tenants)])
                sessions.append(s)
            except (OSError, PgError, asyncio.IncompleteReadError) as e:
                key = type(e).__name__ + ": " + str(e)[:120]
                errors[key] = errors.get(key, 0) + 1

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    return sessions, errors, time.monotonic() - started


async def mode_idle(args, tenants):
    before = rss_kib(args.pid)
    sessions, errors, secs = await open_many(args, tenants, args.clients)
    connected = rss_kib(args.pid)
    # Idle sessions may give buffers back after a while: measure once they have settled.
    await asyncio.sleep(args.settle)
    after = rss_kib(args.pid)
    held = len(sessions)
    # Prove they are alive: every 50th session runs a query.
    alive_errors = 0
    for s in sessions[::50]:
        try:
            await asyncio.wait_for(s.query("SELECT 1"), 10)
        except Exception:
            alive_errors += 1
    for s in sessions:
        s.close()
    return {
        "clients": held,
        "connect_errors": errors,
        "connect_secs": round(secs, 3),
        "rss_before_kib": before,
        "rss_connected_kib": connected,
        "settle_secs": args.settle,
        "rss_after_kib": after,
        "rss_per_client_bytes": round((after - before) * 1024 / held) if held else None,
        "rss_total_per_client_bytes": round(after * 1024 / held) if held else None,
        "probe_errors": alive_errors,
    }


async def mode_load(args, tenants):
    sessions, errors, secs = await open_many(args, tenants, args.clients)
    rss = rss_kib(args.pid) if args.pid else None
    latencies, qerrors = [], {}
    stop = time.monotonic() + args.duration
    # Each session queries once per `period` on average: clients / period queries a second.
    period = args.clients / args.rate

    async def pause(secs):
        # Never past the end of the run, so the measured rate is the offered one.
        await asyncio.sleep(max(0.0, min(secs, stop - time.monotonic())))

    async def worker(s):
        await pause(random.uniform(0, period))
        while time.monotonic() < stop:
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(s.query("SELECT 1"), 30)
                latencies.append(time.monotonic() - t0)
            except Exception as e:
                key = type(e).__name__ + ": " + str(e)[:120]
                qerrors[key] = qerrors.get(key, 0) + 1
                return
            await pause(random.uniform(0.5, 1.5) * period)

    started = time.monotonic()
    await asyncio.gather(*(worker(s) for s in sessions))
    elapsed = time.monotonic() - started
    for s in sessions:
        s.close()
    latencies.sort()
    n = len(latencies)
    return {
        "clients": len(sessions),
        "connect_errors": errors,
        "connect_secs": round(secs, 3),
        "rss_kib": rss,
        "queries": n,
        "query_errors": qerrors,
        "qps": round(n / elapsed, 1) if elapsed else None,
        "latency_avg_ms": round(1000 * sum(latencies) / n, 3) if n else None,
        "latency_p99_ms": round(1000 * latencies[int(n * 0.99)], 3) if n else None,
        "latency_max_ms": round(1000 * latencies[-1], 3) if n else None,
    }


async def mode_auth(args, tenants):
    errors = {}
    gate = asyncio.Semaphore(args.concurrency)

    async def one(i):
        async with gate:
            try:
                s = await Session.open(args.host, args.port, tenants[i % len(tenants)])
                s.close()
            except (OSError, PgError, asyncio.IncompleteReadError) as e:
                key = type(e).__name__ + ": " + str(e)[:120]
                errors[key] = errors.get(key, 0) + 1

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(args.clients)))
    secs = time.monotonic() - started
    return {
        "connections": args.clients,
        "tenants": min(len(tenants), args.clients),
        "concurrency": args.concurrency,
        "secs": round(secs, 3),
        "per_sec": round(args.clients / secs, 1),
        "errors": errors,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["idle", "load", "auth"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tenants", required=True, help="JSON file: [{db, schema, user, password}]")
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=100, help="logins in flight at once")
    p.add_argument("--pid", type=int, help="the daemon, for RSS")
    p.add_argument("--settle", type=float, default=5.0,
                   help="idle: seconds between connecting and measuring RSS")
    p.add_argument("--duration", type=float, default=10.0, help="load: seconds")
    p.add_argument("--rate", type=float, default=1000.0, help="load: queries a second, all sessions")
    p.add_argument("--deadline", type=float, default=300.0, help="give up after this many seconds")
    args = p.parse_args()
    if args.mode == "idle" and not args.pid:
        p.error("idle needs --pid")
    with open(args.tenants) as f:
        tenants = json.load(f)
    if not tenants:
        p.error("no tenants in " + args.tenants)
    raise_nofile(args.clients + 256)
    run = {"idle": mode_idle, "load": mode_load, "auth": mode_auth}[args.mode]
    try:
        result = asyncio.run(asyncio.wait_for(run(args, tenants), args.deadline))
    except asyncio.TimeoutError:
        sys.exit("pgclient %s: not done within %.0f s" % (args.mode, args.deadline))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
