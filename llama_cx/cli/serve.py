"""`llama-cx serve MODEL`: the OpenAI-compatible server (llama_cx/server) on uvicorn.

    llama-cx serve model.gguf --port 8000 --parallel 8 --ctx 4096 [--api-key KEY]

The command of the server in llama_cx/server: cli/main.py registers it (add_parser) and calls run.
Ctrl-C or SIGTERM: uvicorn stops accepting, lets running requests finish for up to 5 s, then the scheduler
thread stops (requests still running get an error event) and the process exits.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys

from ..errors import LlamaCxError

GRACEFUL_SHUTDOWN_S = 5


def _port(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {s!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in [0, 65535], got {s!r}")
    return v


def _positive(s):
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def add_parser(subs: dict, parser_class=argparse.ArgumentParser, parents=()) -> argparse.ArgumentParser:
    """Register the `serve` command in `subs` (llama_cx.cli's command -> parser table)."""
    p = subs["serve"] = parser_class(
        prog="llama-cx serve", parents=list(parents),
        description="Serve a model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, "
                    "/v1/models, /health, /metrics). Needs: pip install \"llama_cx[server]\".")
    p.add_argument("model", nargs="?", metavar="MODEL", help="checkpoint directory, .pth or .gguf (default: $LLAMA_CX_MODEL)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000)")
    p.add_argument("--parallel", type=_positive, default=4, metavar="N",
                   help="requests served at once, each with its own KV cache (default 4); more wait in a queue")
    p.add_argument("--ctx", type=_positive, metavar="N", help="context length of each slot (default min(model max, 4096))")
    p.add_argument("--api-key", metavar="KEY", default=os.environ.get("LLAMA_CX_API_KEY"),
                   help="require Authorization: Bearer KEY on /v1/* (default: $LLAMA_CX_API_KEY, else none)")
    p.add_argument("--model-name", metavar="NAME", help="the model's id in the API (default: the file name)")
    p.set_defaults(func=run)
    return p


def _check_address(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind(infos[0][4])
    except OSError as e:
        raise LlamaCxError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def run(args) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise LlamaCxError('the server needs starlette and uvicorn: pip install "llama_cx[server]"') from None
    from ..model import load
    from ..server.app import create_app

    path = args.model or os.environ.get("LLAMA_CX_MODEL")
    if not path:
        raise LlamaCxError("no model given: pass MODEL or set LLAMA_CX_MODEL")
    _check_address(args.host, args.port)  # before loading the model: a busy port is a one-line error at once
    model = load(path, huge_pages=getattr(args, "huge_pages", False), kv_dtype=getattr(args, "kv_dtype", "f32"))
    model.require_tokenizer()
    n_ctx = args.ctx or min(model.config.max_seq_len, 4096)
    if n_ctx > model.config.max_seq_len:
        raise LlamaCxError(f"--ctx {n_ctx} exceeds the model's maximum {model.config.max_seq_len}")
    name = args.model_name or os.path.basename(os.path.normpath(path))
    app = create_app(model, model_name=name, n_slots=args.parallel, n_ctx=n_ctx, api_key=args.api_key)
    sys.stderr.write(f"llama-cx: serving {name} on http://{args.host}:{args.port}/v1 "
                     f"({args.parallel} slots x {n_ctx} tokens{', API key required' if args.api_key else ''})\n")
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info", lifespan="on",
                                           timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))
    server.run()
    return 0 if server.started else 1
