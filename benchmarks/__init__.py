"""llama_cx benchmark suite: `python -m benchmarks [--quick]` from the repository root (see README.md).

Benchmarks print numbers; they are not tests and pytest does not collect them.
"""
