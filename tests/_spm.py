"""Test helper: SentencePiece models made with sentencepiece's own protobuf module (the independent writer).

`model_proto_from_gguf` turns a GGUF "llama" vocabulary (read with the `gguf` package) back into the
tokenizer.model Meta ships for Llama 2: a BPE ModelProto with byte fallback and identity normalization, the trainer
and normalizer settings of Llama 2's file.
"""
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb2


def gguf_vocab(path):
    """(tokens, scores, types) of a GGUF vocabulary, read with the `gguf` package."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    return tuple(fields[f"tokenizer.ggml.{k}"].contents() for k in ("tokens", "scores", "token_type"))


def model_proto_from_gguf(path) -> "pb2.ModelProto":
    tokens, scores, types = gguf_vocab(path)
    m = pb2.ModelProto()
    for text, score, t in zip(tokens, scores, types):
        p = m.pieces.add()
        p.piece, p.score, p.type = text, score, t
    t = m.trainer_spec
    t.model_type = pb2.TrainerSpec.BPE
    t.vocab_size = len(tokens)
    t.byte_fallback = True
    t.split_digits = True
    t.unk_id, t.bos_id, t.eos_id, t.pad_id = 0, 1, 2, -1
    n = m.normalizer_spec
    n.name = "identity"
    n.add_dummy_prefix = True
    n.remove_extra_whitespaces = False
    n.escape_whitespaces = True
    return m


def processor(model_proto) -> "spm.SentencePieceProcessor":
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(model_proto.SerializeToString() if hasattr(model_proto, "SerializeToString")
                               else model_proto)
    return sp
