"""Publish a MindBus command with redis-py and wait for its result on a private reply stream.

    python3 publish.py [--role echo] [--type echo.say] [--data '{"text":"hi"}']

Environment: REDIS_URL (default redis://127.0.0.1:6379; a Redis Cluster node works too),
MINDBUS_PREFIX (default mindbus).
Prints the result entry's fields as one JSON object.
"""

import argparse
import json
import os
import sys
import uuid

import redis
import redis.cluster


def connect(url: str):
    """A client of the Redis at `url`, or of its cluster when it is a cluster node."""
    r = redis.Redis.from_url(url)
    if r.info("cluster").get("cluster_enabled") == 1:
        r.close()
        return redis.cluster.RedisCluster.from_url(url)
    return r


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="echo")
    parser.add_argument("--type", default="echo.say")
    parser.add_argument("--data", default='{"text": "hi from python"}')
    parser.add_argument("--timeout-ms", type=int, default=30_000)
    args = parser.parse_args()

    prefix = os.environ.get("MINDBUS_PREFIX", "mindbus")
    r = connect(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    command_id = str(uuid.uuid4())
    # In the role's hash tag, so on Redis Cluster it is in the slot of the role's streams.
    reply = f"{prefix}:reply:{{{args.role}}}:{command_id}"
    # Only `type` is required; `id` and `replyto` let us wait on our own key.
    r.xadd(f"{prefix}:cmd:{{{args.role}}}", {
        "id": command_id,
        "type": args.type,
        "source": "urn:example:python",
        "data": args.data,
        "replyto": reply,
    })
    answer = r.xread({reply: "0-0"}, count=1, block=args.timeout_ms)
    if not answer:
        print(f"no result for {command_id}", file=sys.stderr)
        return 2
    _, entries = answer[0]
    _, fields = entries[0]
    result = {k.decode(): v.decode() for k, v in fields.items()}
    r.delete(reply)
    print(json.dumps(result))
    return 0 if result.get("status") == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
