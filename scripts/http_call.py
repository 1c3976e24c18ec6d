"""A tiny HTTP client for the demo (no curl needed): http_call.py KEY METHOD URL [JSON BODY].
Prints the status line to stderr and the body, pretty when it is JSON, to stdout."""
import json
import sys
import urllib.error
import urllib.request

key, method, url = sys.argv[1:4]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
request = urllib.request.Request(url, data=body, method=method)
request.add_header("Authorization", f"Bearer {key}")
if body is not None:
    request.add_header("Content-Type", "application/json")
try:
    with urllib.request.urlopen(request, timeout=30) as response:
        status, text = response.status, response.read().decode()
except urllib.error.HTTPError as error:
    status, text = error.code, error.read().decode()
print(f"HTTP {status} {method} {url}", file=sys.stderr)
try:
    print(json.dumps(json.loads(text), indent=2))
except ValueError:
    print(text)
sys.exit(0 if status < 400 else 1)
