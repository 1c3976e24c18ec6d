"""A MindBus agent in Python: serves a role through the same consumer group as Rust agents.

    python3 agent.py --role shout [--count N]

It answers each command's `data.text` in upper case, writing the result to the role's result
stream (and to `replyto` when the command names one) and acknowledging the command in one script: as
in the Rust runtime, only the finish that acknowledges the entry first writes a result, so a
command run twice after a reclaim is answered once. (It does not keep the done keys of
commands with an `idempotencykey`.) Environment: REDIS_URL, MINDBUS_PREFIX.
"""

import argparse
import datetime
import json
import os
import re
import socket
import sys
import uuid

import redis


# KEYS: the command stream, the role's result stream, and the reply stream if any (all in the
# role's hash tag, so in one Redis Cluster slot). ARGV: group, entry id, result fields.
# As MindBus's own agents do: a result is written only while its entry is still pending
# (a reclaimed command finished twice is answered once), everything is written before the
# acknowledgement (a failed write leaves the entry pending, never acknowledged unanswered),
# and a reply stream with consumer groups is never capped.
FINISH = """
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if type(pending) ~= 'table' or pending.err or #pending == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
if KEYS[3] then
  local groups = redis.pcall('XINFO', 'GROUPS', KEYS[3])
  if type(groups) ~= 'table' or groups.err or #groups == 0 then
    redis.pcall('XADD', KEYS[3], 'MAXLEN', '~', 1000, '*', unpack(ARGV, 3))
  else
    redis.pcall('XADD', KEYS[3], '*', unpack(ARGV, 3))
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def derived_id(stream: str, entry_id: str) -> str:
    """The id of an entry that carries none, as every MindBus reader derives it: a UUIDv7 whose
    timestamp is the entry's and whose other bits are those of UUIDv5(URL, "<stream>/<entry>")."""
    millis = int(entry_id.split("-")[0])
    hashed = uuid.uuid5(uuid.NAMESPACE_URL, f"{stream}/{entry_id}").bytes
    raw = bytearray(millis.to_bytes(6, "big") + hashed[6:])
    raw[6] = (raw[6] & 0x0F) | 0x70  # version 7
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return str(uuid.UUID(bytes=bytes(raw)))


def serve(r: redis.Redis, prefix: str, role: str, count: int) -> None:
    stream = f"{prefix}:cmd:{{{role}}}"
    consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        r.xgroup_create(stream, role, id="0", mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
    print(f"serving {role} as {consumer}", file=sys.stderr, flush=True)
    served = 0
    while count == 0 or served < count:
        answer = r.xreadgroup(role, consumer, {stream: ">"}, count=10, block=2000)
        for _, entries in answer or []:
            for entry_id, fields in entries:
                handle(r, prefix, stream, role, consumer, entry_id, fields)
                served += 1


def handle(r, prefix, stream, role, consumer, entry_id, fields) -> None:
    f = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
    # A producer may leave `id` out: then every reader derives the same one from the entry.
    command_id = f.get("id") or derived_id(stream, entry_id.decode())
    data = json.loads(f.get("data") or "null") or {}
    result = {
        "id": str(uuid.uuid4()),
        "type": "mindbus.result",
        "source": f"python-agent/{role}/{consumer}",
        "time": now(),
        "datacontenttype": "application/json",
        "data": json.dumps({"text": str(data.get("text", "")).upper()}),
        "correlationid": command_id,
        "status": "completed",
        "attempt": "1",
        "role": role,
    }
    fields = [item for pair in result.items() for item in pair]
    # Only a reply stream of this role may be written to (MindBus's agents refuse any other
    # `replyto` as malformed); anything else gets the result on the result stream only.
    keys = [stream, f"{prefix}:result:{{{role}}}"]
    replyto = f.get("replyto", "")
    if re.fullmatch(rf"{re.escape(prefix)}:reply:\{{{re.escape(role)}\}}:[A-Za-z0-9._-]{{1,128}}", replyto):
        keys.append(replyto)
    r.eval(FINISH, len(keys), *keys, role, entry_id, *fields)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="shout")
    parser.add_argument("--count", type=int, default=0, help="exit after serving this many (0: forever)")
    args = parser.parse_args()
    r = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    serve(r, os.environ.get("MINDBUS_PREFIX", "mindbus"), args.role, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
