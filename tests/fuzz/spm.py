"""Target `spm`: SentencePieceTokenizer.from_model_proto on mutated SentencePiece models (protobuf), then encode,
decode and stream-decode with whatever loaded (the stream must give decode's text), and the piece count the Meta
loader reads without building the tokenizer must be the tokenizer's vocab_size.

Seeds: small BPE models trained by sentencepiece itself (with and without byte fallback, user-defined and control
symbols, UNUSED pieces), serialized by its own protobuf module. Hotspots: every varint key and length of the
top-level fields and of the pieces, so boundary-value edits hit the framing.
"""
import io

from llama_cx.tokenizers.spm import SentencePieceTokenizer, _count_pieces

from ._engine import Seed

NAME = "spm"
TIMEOUT = 10.0
_TEXT = "Hello, world! 123 héllo 日本語 🦙 \n\n  <s> <tool> ok\t"
_LINES = ("The quick brown fox jumps over the lazy dog. <tool> calls and @@ joins.\n"
          "Pack my box with five dozen liquor jugs!   Several    spaces.\nnaïve café 1234 5678\n") * 20


def _trained(**kw) -> bytes:
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2 as pb2

    out = io.BytesIO()
    args = dict(model_type="bpe", vocab_size=120, character_coverage=1.0, normalization_rule_name="identity",
                user_defined_symbols=["<tool>", "@@"], control_symbols=["<ctl>"], hard_vocab_limit=False,
                minloglevel=2)
    args.update(kw)
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(_LINES.splitlines()), model_writer=out, **args)
    m = pb2.ModelProto()
    m.ParseFromString(out.getvalue())
    return m


def _varint_end(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos] & 0x80:
        pos += 1
    return pos + 1


def _hotspots(data: bytes, start=0, end=None, depth=0):
    """(offset, width) of each varint key and length in a well-formed message, pieces included."""
    end = len(data) if end is None else end
    out, pos = [], start
    while pos < end:
        key_end = _varint_end(data, pos)
        out.append((pos, key_end - pos))
        key = data[pos]
        pos = key_end
        wire = key & 7
        if wire == 0:
            nxt = _varint_end(data, pos)
            out.append((pos, nxt - pos))
            pos = nxt
        elif wire == 5:
            pos += 4
        elif wire == 1:
            pos += 8
        elif wire == 2:
            len_end = _varint_end(data, pos)
            out.append((pos, len_end - pos))
            n, shift = 0, 0
            for b in data[pos:len_end]:
                n |= (b & 0x7F) << shift
                shift += 7
            if depth == 0 and key >> 3 in (1, 2, 3) and len(out) < 400:
                out += _hotspots(data, len_end, len_end + n, depth + 1)
            pos = len_end + n
        else:
            break
    return out


def seeds():
    from sentencepiece import sentencepiece_model_pb2 as pb2

    models = {"trained-bpe": _trained(byte_fallback=False),
              "trained-bpe-bytes": _trained(byte_fallback=True, vocab_size=340)}
    m = pb2.ModelProto()
    m.CopyFrom(models["trained-bpe"])
    for i, p in enumerate(m.pieces):
        if p.type == pb2.ModelProto.SentencePiece.NORMAL and len(p.piece) > 1 and i % 5 == 0:
            p.type = pb2.ModelProto.SentencePiece.UNUSED
    m.normalizer_spec.remove_extra_whitespaces = True
    models["trained-bpe-unused"] = m
    out = []
    for name, m in models.items():
        data = m.SerializeToString()
        out.append(Seed(name, data, hotspots=tuple(_hotspots(data)[:400]), weight=3))
    return out


def execute(data: bytes):
    tok = SentencePieceTokenizer.from_model_proto(data, source="fuzz.model")
    assert _count_pieces(data, "fuzz.model") == tok.vocab_size  # the Meta loader's cheap read of the vocab size
    ids = tok.encode(_TEXT, bos=tok.bos_id is not None)
    text = tok.decode(ids)
    d = tok.stream_decoder()
    assert "".join(d.feed(i) for i in ids) + d.flush() == text
