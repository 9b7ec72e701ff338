"""An OpenAI-compatible HTTP server for a llama_cx model: `llama-cx serve MODEL` (pip install "llama_cx[server]").

    app.py        routes, request checks, OpenAI-shaped JSON and server-sent events
    scheduler.py  one thread, N slots (a Context each), one step per busy slot per round, prefix reuse
    metrics.py    Prometheus text for /metrics
    (the `serve` command itself is llama_cx/cli/serve.py)

Starlette + uvicorn rather than FastAPI: Starlette is the ASGI toolkit FastAPI itself is built on, and the
parts FastAPI adds (pydantic models, dependency injection, OpenAPI docs) are what this server does not need:
the request checks are a handful of fields checked by hand into OpenAI's error shape (400 with the field named,
413 for a body over the limit, never pydantic's 422), and leaving pydantic out keeps the extra at two small pure
Python packages (starlette -> anyio; uvicorn -> click, h11) that install anywhere without a compiler.

Replicas: the server keeps nothing between requests but its slots' KV caches (a speed-up, never needed for a
correct answer), so N replicas behind any HTTP load balancer serve N times the users; /health (200 / 503) and
/metrics are per replica.
"""
__all__ = ["create_app"]


def __getattr__(name):
    # Imported on first use, so that `llama-cx --help` and the serve command's own "pip install" hint work
    # without starlette installed.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
