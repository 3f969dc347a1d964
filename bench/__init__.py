"""sessiond's benchmark suite: `python -m bench [--smoke] [--only NAME ...] [--json PATH]`.

Every scenario starts a real `sessiond serve` child process on a free loopback port with a
fresh database in a temporary folder, drives it with the `scripted` provider, and measures a
baseline in the same run (a bare Starlette app under the same uvicorn settings, or the same
workload at another size) so that each headline figure is a ratio that survives a noisy
machine. Every loop is bounded in count and in time.

The client side is our own small asyncio HTTP/1.1 client (`bench/client.py`) rather than
httpx: a thousand streams at 20 events/s each must not make the client the bottleneck.
"""
