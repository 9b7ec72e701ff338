"""What the file-level targets do with a checkpoint that loaded: check its views, then run the model on it.

Whatever a loader accepts goes to the compiled kernels as raw pointers, so the last line of defence is that
every tensor view lies inside its buffer; a forward pass then reads all of them (a bad pointer crashes here,
or is reported by AddressSanitizer under scripts/sanitize.sh).
"""
from llama_cx import dtypes
from llama_cx.model import Model


def check_views(ck):
    for name, t in ck.tensors.items():
        size = len(memoryview(t.buffer).cast("B"))
        if t.numel and dtypes.BY_NAME[t.dtype].block_size > 1:  # block types: contiguous rows of whole blocks
            last = t.offset + t.nbytes
        elif t.numel:
            last = t.offset + t.itemsize * (1 + sum((d - 1) * s for d, s in zip(t.shape, t.strides)))
            assert 0 <= t.offset and last <= size, f"{name}: view {t!r} reaches byte {last} of a {size}-byte buffer"


def run_model(ck):
    check_views(ck)
    model = Model(ck)
    ctx = model.new_context(n_ctx=min(4, ck.config.max_seq_len))
    ctx.forward([0, ck.config.vocab_size - 1][: ctx.n_ctx])
