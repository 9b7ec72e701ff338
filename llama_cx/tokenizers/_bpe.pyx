# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled BPE core: the pre-tokenization scanners and byte-pair merging in C; the twin of `_bpe_py.Core`.

`Core(token_bytes, merges, pattern, ignore_merges, class_table, py_space_table)` has the same
meaning and results as `_bpe_py.Core` (see there and `_pretokenize` for the semantics); the Python twin is the
test oracle. Text is encoded to UTF-8 once and everything after that works on bytes: the scanners decode code
points on the fly and look their class up in a per-code-point table, so no Python object is made per piece.

Performance notes (benchmarks/bench_tokenizer.py: 2.6 MB of prose + code, one thread, a shared 2-core box, so
absolute numbers wander by 2x between runs; compare ratios taken in the same run):
- Llama 3 vocabulary: 17-33 MB/s, 2.3-3.3x tiktoken 0.14 (which does 6.5-12 MB/s on the same text in the same run).
- Token lookup is an open-addressing hash table over the token bytes (one arena), not a dict of bytes: a
  lookup costs a hash of the piece and one memcmp; no Python object is made per piece.
- Most pieces are whole tokens (tiktoken and ignore_merges vocabularies take them without merging), so the
  whole-piece lookup comes first.
- Pieces that need merging go through a direct-mapped cache (8192 entries, pieces up to 24 bytes). For Llama 3 it
  is worth ~15%; for vocabularies without ignore_merges (SmolLM2's "smollm") every piece merges, and the cache is
  4x: 0.7x tiktoken's speed without it, 2.8x with it.
- Merging: the linear scan of tiktoken's `_byte_pair_merge` (cache-friendly, fastest for the usual short pieces)
  up to 64 bytes; longer pieces use a heap over a linked list, O(n log n), so a hostile 1 MB "word" stays fast
  (tiktoken's merge is quadratic there, which is why Meta slices long runs).
- The GIL is held throughout: the cache and output buffer belong to the Core, and a call is far shorter than a
  model step. Release it only with a per-call cache if concurrent encoding ever matters.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcmp, memcpy
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL
    bint PyUnicode_IS_ASCII(object)
    char* PyBytes_AS_STRING(object)
    Py_ssize_t PyBytes_GET_SIZE(object)

cdef extern from *:
    """
    #define LCX_NO_MERGE 0xFFFFFFFFu
    #define LCX_EMPTY_PAIR 0xFFFFFFFFFFFFFFFFull
    """
    uint32_t NO_MERGE "LCX_NO_MERGE"        # the rank of a pair that is not a merge
    uint64_t EMPTY_PAIR "LCX_EMPTY_PAIR"    # an empty slot in the pair table

cdef enum:
    OTHER = 0, LETTER = 1, NUMBER = 2, SPACE = 3                 # code point classes (_pretokenize)
    PAT_LLAMA3 = 0, PAT_GPT2 = 1, PAT_SMOLLM = 2
    SHORT_PIECE = 64          # pieces up to this many bytes merge with the linear scan
    CACHE_BYTES = 24          # pieces up to this many bytes are cached
    CACHE_SLOTS = 8192        # direct-mapped cache size (power of two)
    META_WINDOW = 400000      # Meta's TIKTOKEN_MAX_ENCODE_CHARS
    META_MAX_RUN = 25000      # Meta's MAX_NO_WHITESPACES_CHARS

_PATTERNS = {"llama3": PAT_LLAMA3, "gpt2": PAT_GPT2, "smollm": PAT_SMOLLM}


cdef struct CacheEntry:
    uint64_t h
    uint8_t n          # piece length in bytes; 0 = empty slot
    uint8_t k          # number of ids
    uint8_t piece[CACHE_BYTES]
    uint32_t ids[CACHE_BYTES]


cdef struct HeapItem:
    uint32_t rank
    uint32_t left      # part index (= byte offset of the part in the piece)
    uint32_t right
    uint32_t ver_left
    uint32_t ver_right
    uint32_t merged


# ---------------------------------------------------------------------------------------------------------------
# UTF-8 and classes


cdef inline uint32_t _decode(const uint8_t* s, Py_ssize_t i, int* w) noexcept nogil:
    """The code point at byte i of valid UTF-8, and its width in bytes."""
    cdef uint32_t c = s[i]
    if c < 0x80:
        w[0] = 1
        return c
    if c < 0xE0:
        w[0] = 2
        return ((c & 0x1F) << 6) | (s[i + 1] & 0x3F)
    if c < 0xF0:
        w[0] = 3
        return ((c & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F)
    w[0] = 4
    return ((c & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F)


cdef inline Py_ssize_t _run(const uint8_t* s, Py_ssize_t i, Py_ssize_t end, const uint8_t* cls, int k) noexcept nogil:
    """End of the run of class-k code points starting at byte i."""
    cdef int w
    cdef uint8_t b
    while i < end:
        b = s[i]
        if b < 0x80:
            if cls[b] != k:
                break
            i += 1
        else:
            if cls[_decode(s, i, &w)] != k:
                break
            i += w
    return i


cdef inline uint32_t _fold(uint32_t c) noexcept nogil:
    """Case folding as (?i) applies it to the contraction letters: ASCII, and U+017F long s -> s."""
    if 0x41 <= c <= 0x5A:
        return c + 32
    if c == 0x17F:
        return 0x73
    return c


cdef inline Py_ssize_t _space_piece(const uint8_t* s, Py_ssize_t i, Py_ssize_t end, const uint8_t* cls,
                                     bint newline_rule) noexcept nogil:
    """The piece a whitespace run at i gives: `\\s*[\\r\\n]+` (if newline_rule), then `\\s+(?!\\S)`, then `\\s+`."""
    cdef Py_ssize_t j = i, last_nl = -1, last_start = i
    cdef uint32_t c
    cdef int w
    while j < end:
        c = _decode(s, j, &w)
        if cls[c] != SPACE:
            break
        if c == 10 or c == 13:
            last_nl = j
        last_start = j
        j += w
    if newline_rule and last_nl >= 0:
        return last_nl + 1
    if j < end and last_start > i:
        return last_start  # (?!\S) fails at j: the last space starts the next piece
    return j


cdef Py_ssize_t _piece_llama3(const uint8_t* s, Py_ssize_t i, Py_ssize_t end, const uint8_t* cls) noexcept nogil:
    """End of the piece starting at i under Meta's Llama 3 pattern (see _pretokenize._split_llama3)."""
    cdef int w0, w1, w2
    cdef uint32_t c = _decode(s, i, &w0)
    cdef uint32_t a, b
    cdef int k = cls[c]
    cdef Py_ssize_t j
    if c == 0x27 and i + 1 < end:  # (?i:'s|'t|'re|'ve|'m|'ll|'d)
        a = _fold(_decode(s, i + 1, &w1))
        if a == 0x73 or a == 0x74 or a == 0x6D or a == 0x64:
            return i + 1 + w1
        if (a == 0x72 or a == 0x76 or a == 0x6C) and i + 1 + w1 < end:
            b = _fold(_decode(s, i + 1 + w1, &w2))
            if (a == 0x6C and b == 0x6C) or (a != 0x6C and b == 0x65):
                return i + 1 + w1 + w2
    if k == LETTER:  # \p{L}+
        return _run(s, i + w0, end, cls, LETTER)
    if k != NUMBER and c != 10 and c != 13 and i + w0 < end and cls[_decode(s, i + w0, &w1)] == LETTER:
        return _run(s, i + w0 + w1, end, cls, LETTER)  # [^\r\n\p{L}\p{N}]\p{L}+
    if k == NUMBER:  # \p{N}{1,3}
        j = i + w0
        if j < end and cls[_decode(s, j, &w1)] == NUMBER:
            j += w1
            if j < end and cls[_decode(s, j, &w1)] == NUMBER:
                j += w1
        return j
    if k == OTHER or (c == 0x20 and i + 1 < end and cls[_decode(s, i + 1, &w1)] == OTHER):
        j = _run(s, i + w0, end, cls, OTHER)  # ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        while j < end and (s[j] == 10 or s[j] == 13):
            j += 1
        return j
    return _space_piece(s, i, end, cls, True)


cdef Py_ssize_t _piece_gpt2(const uint8_t* s, Py_ssize_t i, Py_ssize_t end, const uint8_t* cls) noexcept nogil:
    """End of the piece starting at i under the GPT-2 pattern (see _pretokenize._split_gpt2)."""
    cdef int w0, w1
    cdef uint32_t c = _decode(s, i, &w0)
    cdef int k = cls[c], k1
    cdef uint8_t b1, b2
    cdef Py_ssize_t start = i + w0
    if c == 0x27 and i + 1 < end:  # 's|'t|'re|'ve|'m|'ll|'d
        b1 = s[i + 1]
        if b1 == 0x73 or b1 == 0x74 or b1 == 0x6D or b1 == 0x64:
            return i + 2
        if i + 2 < end:
            b2 = s[i + 2]
            if (b2 == 0x65 and (b1 == 0x72 or b1 == 0x76)) or (b1 == 0x6C and b2 == 0x6C):
                return i + 3
    if c == 0x20 and i + 1 < end:
        k1 = cls[_decode(s, i + 1, &w1)]
        if k1 != SPACE:
            k = k1
            start = i + 1 + w1
    if k != SPACE:  # ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
        return _run(s, start, end, cls, k)
    return _space_piece(s, i, end, cls, False)


cdef inline uint64_t _hash(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = 0x9E3779B97F4A7C15ULL ^ (<uint64_t>n * 0xFF51AFD7ED558CCDULL)
    cdef uint64_t w
    while n >= 8:
        memcpy(&w, p, 8)
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL
        h ^= h >> 31
        p += 8
        n -= 8
    w = 0
    if n > 0:
        memcpy(&w, p, n)
    h = (h ^ w) * 0x94D049BB133111EBULL
    h ^= h >> 29
    h *= 0xBF58476D1CE4E5B9ULL
    h ^= h >> 32
    return h


cdef inline uint64_t _hash_pair(uint64_t key) noexcept nogil:
    key *= 0x9E3779B97F4A7C15ULL
    return key ^ (key >> 29)


cdef uint64_t _table_size(Py_ssize_t n):
    cdef uint64_t size = 16
    while size < <uint64_t>(2 * n + 1):
        size <<= 1
    return size


# ---------------------------------------------------------------------------------------------------------------


cdef class Core:
    """Encodes ordinary text (no special tokens) to ids; see `_bpe_py.Core` for the arguments."""

    cdef readonly str pattern
    cdef readonly bint ignore_merges
    cdef public Py_ssize_t short_piece     # tests lower this to exercise the heap merge on short pieces
    cdef int pat
    cdef bint by_rank                       # merges=None: rank of a pair = id of the joined bytes
    cdef bytes _cls_obj, _space_obj, _arena_obj
    cdef const uint8_t* cls
    cdef const uint8_t* pyspace
    cdef Py_ssize_t n_pyspace
    # token bytes: arena[off[i]:off[i+1]] (empty for ids merging may not produce)
    cdef const uint8_t* arena
    cdef uint32_t* off
    cdef Py_ssize_t n_tokens
    cdef Py_ssize_t max_len
    cdef uint32_t* slots                   # bytes -> id + 1 (0 = empty)
    cdef uint64_t slot_mask
    cdef uint64_t* pair_keys               # (left << 32 | right), UINT64_MAX = empty
    cdef uint32_t* pair_rank
    cdef uint32_t* pair_merged
    cdef uint64_t pair_mask
    cdef uint32_t byte_ids[256]
    cdef CacheEntry* cache
    cdef uint32_t* out
    cdef Py_ssize_t out_n, out_cap
    cdef uint32_t* work                    # merge scratch, 6 * work_cap uint32 + heap
    cdef Py_ssize_t work_cap
    cdef HeapItem* heap

    def __cinit__(self):
        self.off = NULL
        self.slots = NULL
        self.pair_keys = NULL
        self.pair_rank = NULL
        self.pair_merged = NULL
        self.cache = NULL
        self.out = NULL
        self.work = NULL
        self.heap = NULL

    def __dealloc__(self):
        free(self.off)
        free(self.slots)
        free(self.pair_keys)
        free(self.pair_rank)
        free(self.pair_merged)
        free(self.cache)
        free(self.out)
        free(self.work)
        free(self.heap)

    def __init__(self, token_bytes, merges, str pattern, bint ignore_merges, bytes class_table,
                 bytes py_space_table):
        cdef Py_ssize_t i, n, total = 0, ln
        cdef uint64_t idx, h, key
        cdef int64_t found
        if pattern not in _PATTERNS:
            raise ValueError(f"unknown pre-tokenizer pattern {pattern!r}")
        if len(class_table) != 0x110000:
            raise ValueError("class_table must have 0x110000 entries")
        self.pattern = pattern
        self.pat = _PATTERNS[pattern]
        self.by_rank = merges is None
        self.ignore_merges = ignore_merges or self.by_rank
        self.short_piece = SHORT_PIECE
        self._cls_obj = class_table
        self.cls = <const uint8_t*> PyBytes_AS_STRING(class_table)
        self._space_obj = py_space_table
        self.pyspace = <const uint8_t*> PyBytes_AS_STRING(py_space_table)
        self.n_pyspace = len(py_space_table)

        n = len(token_bytes)
        self.n_tokens = n
        self.off = <uint32_t*> malloc((n + 1) * sizeof(uint32_t))
        if self.off == NULL:
            raise MemoryError()
        parts = []
        self.max_len = 0
        for i in range(n):
            b = token_bytes[i]
            self.off[i] = total
            if b is not None:
                parts.append(b)
                ln = len(b)
                total += ln
                if ln > self.max_len:
                    self.max_len = ln
        self.off[n] = total
        self._arena_obj = b"".join(parts)
        self.arena = <const uint8_t*> PyBytes_AS_STRING(self._arena_obj)

        size = _table_size(n)
        self.slot_mask = size - 1
        self.slots = <uint32_t*> calloc(size, sizeof(uint32_t))
        if self.slots == NULL:
            raise MemoryError()
        for i in range(n):
            ln = self.off[i + 1] - self.off[i]
            if ln == 0 or self._lookup(self.arena + self.off[i], ln) >= 0:
                continue  # not mergeable, or the same bytes as an earlier id (the earlier wins)
            idx = _hash(self.arena + self.off[i], ln) & self.slot_mask
            while self.slots[idx] != 0:
                idx = (idx + 1) & self.slot_mask
            self.slots[idx] = i + 1

        for i in range(256):
            bb = bytes([i])
            found = self._lookup(<const uint8_t*> PyBytes_AS_STRING(bb), 1)
            if found < 0 and merges is None:
                raise ValueError(f"no token for the byte 0x{i:02x}")
            self.byte_ids[i] = <uint32_t> found if found >= 0 else NO_MERGE  # merges mode: dropped, as in HF

        if merges is not None:
            m = len(merges)
            size = _table_size(m)
            self.pair_mask = size - 1
            self.pair_keys = <uint64_t*> malloc(size * sizeof(uint64_t))
            self.pair_rank = <uint32_t*> malloc(size * sizeof(uint32_t))
            self.pair_merged = <uint32_t*> malloc(size * sizeof(uint32_t))
            if self.pair_keys == NULL or self.pair_rank == NULL or self.pair_merged == NULL:
                raise MemoryError()
            for i in range(<Py_ssize_t> size):
                self.pair_keys[i] = EMPTY_PAIR
            for i in range(m):
                a, b = merges[i]
                joined = token_bytes[a] + token_bytes[b]
                found = self._lookup(<const uint8_t*> PyBytes_AS_STRING(joined), len(joined))
                if found < 0:
                    raise ValueError(f"merge {i} joins to bytes that are not a token")
                key = (<uint64_t> a << 32) | <uint64_t> b
                idx = _hash_pair(key) & self.pair_mask
                while self.pair_keys[idx] != EMPTY_PAIR and self.pair_keys[idx] != key:
                    idx = (idx + 1) & self.pair_mask
                if self.pair_keys[idx] == key:
                    continue  # a repeated merge keeps its first rank (llama.cpp)
                self.pair_keys[idx] = key
                self.pair_rank[idx] = i
                self.pair_merged[idx] = found

        self.cache = <CacheEntry*> calloc(CACHE_SLOTS, sizeof(CacheEntry))
        self.out_cap = 1024
        self.out = <uint32_t*> malloc(self.out_cap * sizeof(uint32_t))
        if self.cache == NULL or self.out == NULL:
            raise MemoryError()

    # -- lookups ---------------------------------------------------------------------------------------------

    cdef inline int64_t _lookup(self, const uint8_t* p, Py_ssize_t n) noexcept nogil:
        """The id whose bytes are p[:n], or -1."""
        cdef uint64_t idx
        cdef uint32_t s, t
        if n > self.max_len or n == 0:
            return -1
        idx = _hash(p, n) & self.slot_mask
        while True:
            s = self.slots[idx]
            if s == 0:
                return -1
            t = s - 1
            if self.off[t + 1] - self.off[t] == n and memcmp(self.arena + self.off[t], p, n) == 0:
                return t
            idx = (idx + 1) & self.slot_mask

    cdef inline uint32_t _pair(self, const uint8_t* p, Py_ssize_t a, Py_ssize_t b, uint32_t left, uint32_t right,
                               uint32_t* merged) noexcept nogil:
        """Rank of joining the parts p[a:?] (id left) and p[?:b] (id right); NO_MERGE if they do not join."""
        cdef int64_t t
        cdef uint64_t key, idx
        if self.by_rank:
            t = self._lookup(p + a, b - a)
            if t < 0:
                return NO_MERGE
            merged[0] = <uint32_t> t
            return <uint32_t> t
        key = (<uint64_t> left << 32) | right
        idx = _hash_pair(key) & self.pair_mask
        while True:
            if self.pair_keys[idx] == key:
                merged[0] = self.pair_merged[idx]
                return self.pair_rank[idx]
            if self.pair_keys[idx] == EMPTY_PAIR:
                return NO_MERGE
            idx = (idx + 1) & self.pair_mask

    # -- output ----------------------------------------------------------------------------------------------

    cdef int _reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t cap = self.out_cap
        cdef uint32_t* p
        if self.out_n + extra <= cap:
            return 0
        while cap < self.out_n + extra:
            cap *= 2
        p = <uint32_t*> realloc(self.out, cap * sizeof(uint32_t))
        if p == NULL:
            raise MemoryError()
        self.out = p
        self.out_cap = cap
        return 0

    cdef int _work(self, Py_ssize_t n) except -1:
        """Scratch for merging a piece of n bytes."""
        cdef uint32_t* p
        cdef HeapItem* h
        if n > self.work_cap:
            p = <uint32_t*> realloc(self.work, 6 * (n + 1) * sizeof(uint32_t))
            if p == NULL:
                raise MemoryError()
            self.work = p
            h = <HeapItem*> realloc(self.heap, 3 * (n + 1) * sizeof(HeapItem))
            if h == NULL:
                raise MemoryError()
            self.heap = h
            self.work_cap = n
        return 0

    # -- merging ---------------------------------------------------------------------------------------------

    cdef int _encode_piece(self, const uint8_t* p, Py_ssize_t n) except -1:
        """Appends the ids of one piece to the output."""
        cdef uint64_t h = 0
        cdef int64_t t
        cdef CacheEntry* e = NULL
        cdef Py_ssize_t before, k
        self._reserve(n)
        if n == 1:
            if self.byte_ids[p[0]] != NO_MERGE:
                self.out[self.out_n] = self.byte_ids[p[0]]
                self.out_n += 1
            return 0
        if self.ignore_merges:
            t = self._lookup(p, n)
            if t >= 0:
                self.out[self.out_n] = <uint32_t> t
                self.out_n += 1
                return 0
        if n <= CACHE_BYTES:
            h = _hash(p, n)
            e = &self.cache[h & (CACHE_SLOTS - 1)]
            if e.n == n and e.h == h and memcmp(e.piece, p, n) == 0:
                memcpy(self.out + self.out_n, e.ids, e.k * sizeof(uint32_t))
                self.out_n += e.k
                return 0
        before = self.out_n
        if n <= self.short_piece:
            self._merge_linear(p, n)
        else:
            self._merge_heap(p, n)
        if n <= CACHE_BYTES:
            k = self.out_n - before
            e.h = h
            e.n = <uint8_t> n
            e.k = <uint8_t> k
            memcpy(e.piece, p, n)
            memcpy(e.ids, self.out + before, k * sizeof(uint32_t))
        return 0

    cdef int _merge_linear(self, const uint8_t* p, Py_ssize_t n) except -1:
        """tiktoken's _byte_pair_merge: parts in arrays, repeatedly join the leftmost pair of lowest rank."""
        cdef uint32_t* st      # (m + 1,) part start offsets
        cdef uint32_t* ids     # (m,) part ids
        cdef uint32_t* rk      # (m - 1,) rank of joining part i and i + 1
        cdef uint32_t* mg      # (m - 1,) the id that join gives
        cdef Py_ssize_t m, i, best_i
        cdef uint32_t best
        self._work(n)
        st = self.work
        ids = st + (n + 1)
        rk = ids + (n + 1)
        mg = rk + (n + 1)
        cdef uint32_t t
        with nogil:
            m = 0
            for i in range(n):
                t = self.byte_ids[p[i]]
                if t != NO_MERGE:  # a byte without a token (merges mode only) is dropped, as in HF tokenizers
                    st[m] = i
                    ids[m] = t
                    m += 1
            st[m] = n
            for i in range(m - 1):
                rk[i] = self._pair(p, st[i], st[i + 2], ids[i], ids[i + 1], &mg[i])
            while m > 1:
                best = NO_MERGE
                best_i = -1
                for i in range(m - 1):
                    if rk[i] < best:
                        best = rk[i]
                        best_i = i
                if best == NO_MERGE:
                    break
                i = best_i
                ids[i] = mg[i]
                # drop part i + 1
                _shift(st, i + 1, m + 1)
                _shift(ids, i + 1, m)
                _shift(rk, i, m - 1)
                _shift(mg, i, m - 1)
                m -= 1
                if i < m - 1:
                    rk[i] = self._pair(p, st[i], st[i + 2], ids[i], ids[i + 1], &mg[i])
                if i > 0:
                    rk[i - 1] = self._pair(p, st[i - 1], st[i + 1], ids[i - 1], ids[i], &mg[i - 1])
            memcpy(self.out + self.out_n, ids, m * sizeof(uint32_t))
            self.out_n += m
        return 0

    cdef int _merge_heap(self, const uint8_t* p, Py_ssize_t n) except -1:
        """The same merges in O(n log n): parts in a linked list, candidate joins in a heap keyed (rank, left)."""
        cdef uint32_t* st      # (m + 1,) start byte of part k (parts are named by their initial index k)
        cdef uint32_t* ids     # (m,) id of part k
        cdef uint32_t* nxt     # (m,) the next part, m at the end
        cdef uint32_t* prv     # (m,) the previous part, NO_MERGE at the start
        cdef uint32_t* ver     # (m,) bumped whenever part k changes or disappears
        cdef HeapItem* heap
        cdef HeapItem it
        cdef Py_ssize_t hn = 0, i, j, m = 0
        cdef uint32_t a, b, r, mgd, t
        self._work(n)
        st = self.work
        ids = st + (n + 1)
        nxt = ids + (n + 1)
        prv = nxt + (n + 1)
        ver = prv + (n + 1)
        heap = self.heap
        with nogil:
            for i in range(n):
                t = self.byte_ids[p[i]]
                if t != NO_MERGE:
                    st[m] = i
                    ids[m] = t
                    m += 1
            st[m] = n
            for i in range(m):
                nxt[i] = i + 1
                prv[i] = i - 1 if i > 0 else NO_MERGE
                ver[i] = 0
            for i in range(m - 1):
                r = self._pair(p, st[i], st[i + 2], ids[i], ids[i + 1], &mgd)
                if r != NO_MERGE:
                    hn = _heap_push(heap, hn, r, i, i + 1, 0, 0, mgd)
            while hn > 0:
                it = heap[0]
                hn = _heap_pop(heap, hn)
                a = it.left
                b = it.right
                if ver[a] != it.ver_left or nxt[a] != b or ver[b] != it.ver_right:
                    continue  # stale: one side changed since this join was ranked
                ids[a] = it.merged
                ver[a] += 1
                ver[b] += 1
                nxt[a] = nxt[b]
                if nxt[a] < m:
                    prv[nxt[a]] = a
                if prv[a] != NO_MERGE:
                    j = prv[a]
                    r = self._pair(p, st[j], st[nxt[a]], ids[j], ids[a], &mgd)
                    if r != NO_MERGE:
                        hn = _heap_push(heap, hn, r, j, a, ver[j], ver[a], mgd)
                if nxt[a] < m:
                    j = nxt[a]
                    r = self._pair(p, st[a], st[nxt[j]], ids[a], ids[j], &mgd)
                    if r != NO_MERGE:
                        hn = _heap_push(heap, hn, r, a, j, ver[a], ver[j], mgd)
            i = 0
            while i < m:
                self.out[self.out_n] = ids[i]
                self.out_n += 1
                i = nxt[i]
        return 0

    # -- scanning --------------------------------------------------------------------------------------------

    cdef inline Py_ssize_t _piece_end(self, const uint8_t* s, Py_ssize_t i, Py_ssize_t end,
                                      Py_ssize_t* next_num) noexcept nogil:
        """End of the piece starting at i, the slice ending at end."""
        cdef int w
        cdef Py_ssize_t j
        if self.pat == PAT_LLAMA3:
            return _piece_llama3(s, i, end, self.cls)
        if self.pat == PAT_GPT2:
            return _piece_gpt2(s, i, end, self.cls)
        # smollm: each \p{N} alone, gpt2 between them; next_num caches where the next number starts
        if next_num[0] < i:
            j = i
            while j < end:
                if self.cls[_decode(s, j, &w)] == NUMBER:
                    break
                j += w
            next_num[0] = j
        if next_num[0] == i:
            _decode(s, i, &w)
            return i + w
        return _piece_gpt2(s, i, next_num[0], self.cls)

    cdef inline bint _pyspace(self, uint32_t c) noexcept nogil:
        return c < <uint32_t> self.n_pyspace and self.pyspace[c] != 0

    cdef int _slices(self, const uint8_t* s, Py_ssize_t n, list ends) except -1:
        """Meta's slicing (_pretokenize.meta_slices) as byte offsets where each slice ends."""
        cdef Py_ssize_t b = 0, count, cur_len
        cdef bint cur_space, now
        cdef int w
        cdef uint32_t c
        while b < n:
            count = 0
            cur_len = 0
            cur_space = self._pyspace(_decode(s, b, &w))
            while b < n and count < META_WINDOW:
                c = _decode(s, b, &w)
                now = self._pyspace(c)
                if cur_space ^ now:
                    cur_len = 1
                    cur_space = now
                else:
                    cur_len += 1
                    if cur_len > META_MAX_RUN:
                        ends.append(b)
                        cur_len = 1
                b += w
                count += 1
            ends.append(b)
        return 0

    cdef object _utf8(self, str text, const uint8_t** s, Py_ssize_t* n):
        """UTF-8 of text (raises UnicodeEncodeError on lone surrogates); returns the object owning the bytes."""
        if PyUnicode_IS_ASCII(text):
            s[0] = <const uint8_t*> PyUnicode_AsUTF8AndSize(text, n)
            return text
        data = text.encode("utf-8")
        s[0] = <const uint8_t*> PyBytes_AS_STRING(data)
        n[0] = PyBytes_GET_SIZE(data)
        return data

    def encode_ordinary(self, str text, bint meta_slicing):
        """The ids of text, no special tokens, in Meta's slices if meta_slicing (UnicodeEncodeError on lone
        surrogates)."""
        cdef const uint8_t* s
        cdef Py_ssize_t n, i, j, end, k, next_num = -1
        cdef list ends
        owner = self._utf8(text, &s, &n)
        if meta_slicing and n > META_MAX_RUN:
            ends = []
            self._slices(s, n, ends)
        else:
            ends = [n]
        self.out_n = 0
        i = 0
        for end in ends:
            next_num = -1
            while i < end:
                j = self._piece_end(s, i, end, &next_num)
                self._encode_piece(s + i, j - i)
                i = j
        return _to_list(self.out, self.out_n)

    def split(self, str text):
        """The pieces of text (for tests: the compiled scanner against _pretokenize)."""
        cdef const uint8_t* s
        cdef Py_ssize_t n, i = 0, j, next_num = -1
        owner = self._utf8(text, &s, &n)
        pieces = []
        while i < n:
            j = self._piece_end(s, i, n, &next_num)
            pieces.append((<const char*> s)[i:j].decode("utf-8"))
            i = j
        return pieces

    def encode_piece(self, bytes piece):
        """The ids of one piece (for tests: merging without the cache)."""
        cdef const uint8_t* p = <const uint8_t*> PyBytes_AS_STRING(piece)
        cdef Py_ssize_t n = len(piece)
        cdef int64_t t
        self.out_n = 0
        if n == 0:
            return []
        self._reserve(n)
        if self.ignore_merges:
            t = self._lookup(p, n)
            if t >= 0:
                return [t]
        if n <= self.short_piece:
            self._merge_linear(p, n)
        else:
            self._merge_heap(p, n)
        return _to_list(self.out, self.out_n)


cdef inline void _shift(uint32_t* a, Py_ssize_t i, Py_ssize_t m) noexcept nogil:
    """Removes a[i] from a[:m]."""
    cdef Py_ssize_t k
    for k in range(i, m - 1):
        a[k] = a[k + 1]


cdef inline bint _heap_less(HeapItem* x, HeapItem* y) noexcept nogil:
    return x.rank < y.rank or (x.rank == y.rank and x.left < y.left)


cdef Py_ssize_t _heap_push(HeapItem* heap, Py_ssize_t hn, uint32_t rank, uint32_t left, uint32_t right,
                           uint32_t ver_left, uint32_t ver_right, uint32_t merged) noexcept nogil:
    cdef Py_ssize_t i = hn, parent
    cdef HeapItem it
    it.rank = rank
    it.left = left
    it.right = right
    it.ver_left = ver_left
    it.ver_right = ver_right
    it.merged = merged
    while i > 0:
        parent = (i - 1) >> 1
        if not _heap_less(&it, &heap[parent]):
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = it
    return hn + 1


cdef Py_ssize_t _heap_pop(HeapItem* heap, Py_ssize_t hn) noexcept nogil:
    """Removes heap[0]; returns the new size."""
    cdef Py_ssize_t i = 0, c
    cdef HeapItem last
    hn -= 1
    if hn == 0:
        return 0
    last = heap[hn]
    while True:
        c = 2 * i + 1
        if c >= hn:
            break
        if c + 1 < hn and _heap_less(&heap[c + 1], &heap[c]):
            c += 1
        if not _heap_less(&heap[c], &last):
            break
        heap[i] = heap[c]
        i = c
    heap[i] = last
    return hn


cdef list _to_list(uint32_t* a, Py_ssize_t n):
    cdef list out = PyList_New(n)
    cdef Py_ssize_t i
    cdef object v
    for i in range(n):
        v = a[i]
        Py_INCREF(v)
        PyList_SET_ITEM(out, i, v)
    return out
