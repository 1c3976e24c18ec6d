"""What Redis spends per finished command, by how it is written.

    REDIS_URL=redis://127.0.0.1:6379 python3 scripts/bench-finish.py [--batches 200] [--batch 100]

Writes batches of finished echo commands (result, completed event, ack of a pending entry)
to a key prefix of its own, four ways, and prints the server's CPU (from INFO cpu) per
command:
  script    the agent's finish script (mindbus/src/runtime/finish.lua) by its hash, atomic per
            batch
  pipeline  the same commands as a plain pipeline, without the atomicity
  noop      the script's call with the same arguments and a script that does nothing
  event     one lifecycle event as a plain XADD, as agents write `received` and `started`
Use a Redis nobody else is busy with: the figures are the server's whole CPU.
"""

import argparse
import os
import pathlib
import time
import uuid

import redis

SCRIPT = (pathlib.Path(__file__).parent.parent / "mindbus/src/runtime/finish.lua").read_text()
SOURCE = "mindbus-agent/echo/host-1234-0a1b2c3d4e5f"
TRACE = "00-01a20c5aa7127936a6b125a133e0f3d2-a7b125a133e0f3d2-01"


def event(kind: str, command_id: str) -> list:
    return ["type", f"mindbus.command.{kind}", "source", SOURCE, "time", "2026-11-24T06:59:57.331245497Z",
            "traceparent", TRACE, "correlationid", command_id, "role", "echo", "attempt", "1"]


def result(command_id: str) -> list:
    return ["id", str(uuid.uuid4()), "type", "mindbus.result", "source", SOURCE,
            "time", "2026-11-24T06:59:57.331245497Z", "data", '{"i": 1, "text": "benchmark"}',
            "traceparent", TRACE, "correlationid", command_id, "status", "completed", "role", "echo"]


def pending(r: redis.Redis, commands: str, n: int) -> list:
    """Adds n command entries and delivers them, so that their finishes have something to ack."""
    pipe = r.pipeline(transaction=False)
    for _ in range(n):
        pipe.xadd(commands, {"type": "echo.say"})
    entries = [e.decode() for e in pipe.execute()]
    r.xreadgroup("echo", "bench", {commands: ">"}, count=n)
    return entries


def server_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def run(r: redis.Redis, mode: str, batches: int, size: int) -> float:
    prefix = f"bench-finish-{os.getpid()}-{mode}"
    commands = f"{prefix}:cmd:{{echo}}"
    r.xgroup_create(commands, "echo", id="0", mkstream=True)
    work = []
    for _ in range(batches):
        entries = pending(r, commands, size)
        ids = [str(uuid.uuid4()) for _ in range(size)]
        keys = [commands, f"{prefix}:result:{{echo}}", f"{prefix}:event:{{echo}}", f"{prefix}:dlq:{{echo}}"]
        args = [len(keys), *keys, "echo", 0, 86400, 60]
        for entry, command_id in zip(entries, ids):
            res, ev = result(command_id), event("completed", command_id)
            # No done key and no reply stream: like the benchmark's commands.
            args += [entry, 0, 0, len(res), *res, len(ev), *ev, 0]
        work.append((entries, ids, args))
    sha, noop = r.script_load(SCRIPT), r.script_load("return 0")
    before = server_cpu(r)
    for entries, ids, args in work:
        if mode == "script":
            accepted = r.evalsha(sha, *args)
            assert all(a == 1 for a in accepted), "every finish acknowledges a pending entry"
        elif mode == "noop":
            r.evalsha(noop, *args)
        else:
            pipe = r.pipeline(transaction=False)
            for command_id in ids:
                if mode == "event":
                    pipe.execute_command("XADD", f"{prefix}:event:{{echo}}", "*", *event("started", command_id))
                    continue
                pipe.execute_command("XADD", f"{prefix}:result:{{echo}}", "*", *result(command_id))
                pipe.execute_command("XADD", f"{prefix}:event:{{echo}}", "*", *event("completed", command_id))
            if mode == "pipeline":
                for entry in entries:  # one XACK each, as the script acknowledges them
                    pipe.execute_command("XACK", commands, "echo", entry)
            pipe.execute()
    spent = server_cpu(r) - before
    for key in r.scan_iter(f"{prefix}:*", count=1000):
        r.delete(key)
    return spent / (batches * size) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    r = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    print(f"{args.batches} batches of {args.batch} finished commands; Redis CPU per command")
    for mode in ["script", "pipeline", "noop", "event"]:
        print(f"{mode:<10} {run(r, mode, args.batches, args.batch):6.2f} µs")
        time.sleep(0.2)


if __name__ == "__main__":
    main()
