# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Thin Cython layer over the C kernels in csrc/: argument checks once, then `with nogil` calls.

Buffers are anything exporting the buffer protocol (array('f'), bytearray, mmap slices, numpy arrays);
shapes are passed explicitly and checked against the buffers' byte lengths before any C call.
"""
from libc.stdint cimport int32_t, int64_t, uint16_t
from libc.string cimport memcpy
from cpython.mem cimport PyMem_Malloc, PyMem_Free

cdef extern from "lcx.h" nogil:
    enum:
        LCX_ISA_GENERIC
        LCX_ISA_AVX2
        LCX_ISA_AVX512
        LCX_ISA_COUNT
        LCX_DT_F32
        LCX_DT_BF16
        LCX_DT_COUNT
        LCX_ATT_QB
        LCX_DEC_KC

    ctypedef struct lcx_kernels:
        const char *name

    ctypedef void (*lcx_gemm_fn)(const void *W, size_t ldw, const float *X, size_t ldx, float *Y, size_t ldy,
                                 size_t rows, size_t t, size_t n, int beta)
    ctypedef void (*lcx_gemm_act_fn)(const void *W, size_t ldw, const void *Xa, size_t ldx, float *Y, size_t ldy,
                                     size_t rows, size_t t, size_t n, int beta)
    ctypedef void (*lcx_to_f32_fn)(const void *src, float *dst, size_t n)
    ctypedef void (*lcx_from_f32_fn)(const float *src, void *dst, size_t n)
    ctypedef struct lcx_dtype_traits:
        const char *name
        size_t block_size
        size_t block_bytes
        lcx_to_f32_fn to_f32[3]
        lcx_from_f32_fn from_f32[3]
        lcx_gemm_fn gemm[3]
        int act_type
        lcx_gemm_act_fn gemm_act[3]
        unsigned gemm_act_cpu
        int act_decode
    const lcx_dtype_traits lcx_dtypes[]
    size_t lcx_dtype_bytes(int dt, size_t n)
    lcx_gemm_fn lcx_gemm_kernel(int dt)
    lcx_gemm_act_fn lcx_gemm_act_kernel(int dt)
    lcx_to_f32_fn lcx_to_f32_kernel(int dt)
    lcx_from_f32_fn lcx_from_f32_kernel(int dt)

    int lcx_isa_supported(int isa)
    int lcx_isa_compiled(int isa)
    int lcx_isa_best()
    int lcx_set_isa(int isa)
    int lcx_get_isa()
    const lcx_kernels *lcx_table(int isa)
    int lcx_openmp_enabled()
    int lcx_avx512bf16_supported()
    int lcx_set_bf16_prefill(int on)
    int lcx_get_bf16_prefill()
    int lcx_set_bf16_decode(int on)
    int lcx_get_bf16_decode()
    void lcx_set_q8_prefill(int on)
    int lcx_get_q8_prefill()
    void lcx_set_num_threads(int n)
    int lcx_get_num_threads()
    int lcx_omp_max_threads()

    void lcx_linear(const void *W, int wtype, const float *X, size_t ldx, float *Y, size_t ldy,
                    size_t d, size_t n, size_t t, int beta)
    void lcx_rmsnorm_f32(const float *x, const float *w, float *out, size_t t, size_t n, float eps)
    void lcx_rope_table(const int64_t *pos, size_t t, const float *freqs, size_t half, float *cos_t, float *sin_t)
    void lcx_rope_f32(float *x, size_t ldx, size_t t, size_t n_heads, size_t head_dim, const float *cos_t,
                      const float *sin_t)
    void lcx_swiglu_f32(float *a, const float *b, size_t n)
    int64_t lcx_argmax_f32(const float *x, size_t n)
    void lcx_softmax_f32(float *x, size_t n)
    void lcx_attention_f32(const float *q, const float *kc, const float *vc, float *out, size_t t, size_t pos0,
                           size_t n_heads, size_t n_kv, size_t hd, float *scratch, size_t scratch_stride,
                           int n_scratch)
    void lcx_attention_decode_f32(const float *q, const float *kc, const float *vc, float *out, size_t n_keys,
                                  size_t n_heads, size_t n_kv, size_t hd, float *scratch, float *part, int n_scratch)

    ctypedef struct lcx_mat:
        const void *data
        int dtype

    ctypedef struct lcx_layer:
        lcx_mat wq, wk, wv, wo, w1, w2, w3
        const float *attn_norm
        const float *ffn_norm

    ctypedef struct lcx_model:
        int64_t dim, n_layers, n_heads, n_kv_heads, head_dim, hidden_dim, vocab_size
        float norm_eps
        lcx_mat tok_embeddings
        lcx_mat output
        const float *norm
        const float *rope_freqs
        const lcx_layer *layers
        int act_type

    ctypedef struct lcx_state:
        int64_t n_ctx, max_batch, n_scratch_threads, max_threads

    size_t lcx_state_bytes(const lcx_model *m, int64_t n_ctx, int64_t max_batch, int64_t n_threads, int kv_dtype)
    lcx_state *lcx_state_new(const lcx_model *m, int64_t n_ctx, int64_t max_batch, int64_t n_threads, int kv_dtype)
    void lcx_state_free(lcx_state *s)
    int lcx_forward(const lcx_model *m, lcx_state *s, const int32_t *tokens, int64_t t, int64_t pos0,
                    float *logits, int all_logits)
    void lcx_row_to_f32(const lcx_mat *table, int64_t cols, int64_t row, float *dst)
    lcx_state *lcx_batch_new(const lcx_model *m, int64_t n_ctx, int64_t max_tokens, int64_t n_threads, int kv_dtype)
    int lcx_forward_batch(const lcx_model *m, lcx_state *work, lcx_state *const *states, const int32_t *tokens,
                          const int64_t *n_tok, const int64_t *pos0, int64_t n_seq, float *logits, int all_logits)

ISA_NAMES = ("generic", "avx2", "avx512")
# the C weight-type table (csrc/dtypes.c), by name: its row ids are the c_id column of llama_cx/dtypes.py
DTYPE_CODES = {lcx_dtypes[i].name.decode(): i for i in range(LCX_DT_COUNT)}
ATT_QB = LCX_ATT_QB  # attention score rows (queries of one head) per thread
DEC_KC = LCX_DEC_KC  # keys per part of a decode step's attention


def dtype_table():
    """The C weight-type table, one dict per row: id, name, block size, bytes per block, act_type, and the
    instruction sets that have its f32-activation product (gemm) and its converted-activation one (gemm_act)."""
    rows = []
    for i in range(LCX_DT_COUNT):
        d = &lcx_dtypes[i]
        rows.append(dict(
            id=i, name=d.name.decode(), block_size=d.block_size, block_bytes=d.block_bytes,
            act_type=d.act_type, gemm=[ISA_NAMES[k] for k in range(LCX_ISA_COUNT) if d.gemm[k] != NULL],
            gemm_act=[ISA_NAMES[k] for k in range(LCX_ISA_COUNT) if d.gemm_act[k] != NULL],
            act_decode=bool(d.act_decode),
        ))
    return rows


# ---- run-time information and switches ------------------------------------------------------------
def isa_supported(str name):
    return bool(lcx_isa_supported(ISA_NAMES.index(name)))


def isa_compiled(str name):
    return bool(lcx_isa_compiled(ISA_NAMES.index(name)))


def best_isa():
    return ISA_NAMES[lcx_isa_best()]


def get_isa():
    return ISA_NAMES[lcx_get_isa()]


def set_isa(str name):
    """Force an instruction-set path; ValueError when this CPU/OS (or this build) cannot run it."""
    if name not in ISA_NAMES:
        raise ValueError(f"unknown ISA {name!r}; choose one of {', '.join(ISA_NAMES)}")
    if lcx_set_isa(ISA_NAMES.index(name)) != 0:
        raise ValueError(f"ISA {name!r} is not supported on this CPU/OS (best available: {best_isa()})")


def openmp_enabled():
    return bool(lcx_openmp_enabled())


def omp_max_threads():
    return lcx_omp_max_threads()


def avx512bf16_supported():
    return bool(lcx_avx512bf16_supported())


def set_bf16_prefill(bint on):
    """Prompt blocks: round activations to bf16 and use AVX512-BF16 dot products (faster, less exact)."""
    if lcx_set_bf16_prefill(1 if on else 0) != 0:
        raise ValueError("bf16 prefill needs a CPU with AVX512-BF16 (and a build that has the kernel)")


def bf16_prefill():
    """True when prompt blocks currently use bf16 activations (requested and on the avx512 path)."""
    return bool(lcx_get_bf16_prefill())


def set_q8_prefill(bint on):
    """Prompt blocks over block-quantized weights: q8 activations and integer dots (faster, less exact)."""
    lcx_set_q8_prefill(1 if on else 0)


def q8_prefill():
    return bool(lcx_get_q8_prefill())


def set_bf16_decode(bint on):
    """One-token steps: round activations to bf16 and use AVX512-BF16 dot products (faster, less exact)."""
    if lcx_set_bf16_decode(1 if on else 0) != 0:
        raise ValueError("bf16 decode needs a CPU with AVX512-BF16 (and a build that has the kernel)")


def bf16_decode():
    """True when one-token steps currently use bf16 activations (requested and on the avx512 path)."""
    return bool(lcx_get_bf16_decode())


def set_num_threads(int n):
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    lcx_set_num_threads(n)


def get_num_threads():
    return lcx_get_num_threads()


# ---- buffer helpers -------------------------------------------------------------------------------
cdef inline const unsigned char *_rd(object buf, size_t need, str what) except NULL:
    cdef const unsigned char[::1] mv = memoryview(buf).cast("B")
    if <size_t>mv.shape[0] < need:
        raise ValueError(f"{what}: buffer holds {mv.shape[0]} bytes, {need} needed")
    if need == 0:
        return <const unsigned char *>1  # never dereferenced
    return &mv[0]


cdef inline unsigned char *_wr(object buf, size_t need, str what) except NULL:
    cdef unsigned char[::1] mv = memoryview(buf).cast("B")
    if <size_t>mv.shape[0] < need:
        raise ValueError(f"{what}: buffer holds {mv.shape[0]} bytes, {need} needed")
    if need == 0:
        return <unsigned char *>1
    return &mv[0]


cdef inline int _code(str dtype) except -1:
    code = DTYPE_CODES.get(dtype)
    if code is None:
        raise ValueError(f"unknown dtype {dtype!r} (the C table has {', '.join(DTYPE_CODES)})")
    return code


KV_DTYPES = ("f32", "bf16", "f16")  # element types a KV cache may have (rows of lcx_dtypes with from_f32)


cdef inline int _kv_code(str dtype) except -1:
    if dtype not in KV_DTYPES:
        raise ValueError(f"KV cache dtype {dtype!r} not supported (one of {', '.join(KV_DTYPES)})")
    return DTYPE_CODES[dtype]


cdef inline int _gemm_code(str dtype) except -1:
    """The C id of a weight type a product can read (its row has a gemm)."""
    cdef int code = _code(dtype)
    if lcx_gemm_kernel(code) == NULL:
        readable = [n for n, c in DTYPE_CODES.items() if lcx_gemm_kernel(c) != NULL]
        raise ValueError(f"no kernel reads {dtype} weights (products read {', '.join(readable)})")
    return code


# ---- kernels, one call each (used by tests and by model set-up) ------------------------------------
def linear(W, str wtype, X, Y, size_t d, size_t n, size_t t, bint accumulate=False):
    """Y (t, d) = [Y +] X (t, n) @ Wᵀ, W (d, n) row-major of a type a product reads; threads split rows of W."""
    cdef int code = _gemm_code(wtype), beta = 1 if accumulate else 0
    cdef const void *w = _rd(W, lcx_dtype_bytes(code, d * n), "W")
    cdef const float *x = <const float *>_rd(X, t * n * 4, "X")
    cdef float *y = <float *>_wr(Y, t * d * 4, "Y")
    with nogil:
        lcx_linear(w, code, x, n, y, d, d, n, t, beta)


def linear_bf16bf16(W, XB, Y, size_t d, size_t n, size_t t, bint accumulate=False):
    """Y (t, d) = [Y +] XB (t, n) @ Wᵀ with W and XB bf16: the bf16 row's gemm_act (AVX512-BF16), one thread,
    of the best instruction set this CPU runs that has it (whichever ISA is active)."""
    cdef lcx_gemm_act_fn gemm_act = NULL
    cdef int isa
    if lcx_avx512bf16_supported():
        for isa in range(LCX_ISA_COUNT - 1, -1, -1):
            if lcx_isa_supported(isa) and lcx_dtypes[LCX_DT_BF16].gemm_act[isa] != NULL:
                gemm_act = lcx_dtypes[LCX_DT_BF16].gemm_act[isa]
                break
    if gemm_act == NULL:
        raise ValueError("the AVX512-BF16 kernel is not available on this CPU/build")
    cdef const void *w = _rd(W, d * n * 2, "W")
    cdef const void *xb = _rd(XB, t * n * 2, "XB")
    cdef float *y = <float *>_wr(Y, t * d * 4, "Y")
    cdef int beta = 1 if accumulate else 0
    with nogil:
        gemm_act(w, n, xb, n, y, d, d, t, n, beta)


def round_bf16(X, OUT, size_t n):
    """OUT (n,) bf16 = round-to-nearest-even(X (n,) f32): the bf16 row's from_f32 kernel of the active ISA."""
    cdef const float *x = <const float *>_rd(X, n * 4, "X")
    cdef void *o = _wr(OUT, n * 2, "OUT")
    cdef lcx_from_f32_fn f = lcx_from_f32_kernel(LCX_DT_BF16)
    with nogil:
        f(x, o, n)


def rmsnorm(X, W, OUT, size_t t, size_t n, float eps):
    cdef const float *x = <const float *>_rd(X, t * n * 4, "X")
    cdef const float *w = <const float *>_rd(W, n * 4, "W")
    cdef float *o = <float *>_wr(OUT, t * n * 4, "OUT")
    with nogil:
        lcx_rmsnorm_f32(x, w, o, t, n, eps)


def rope(X, positions, FREQS, size_t t, size_t n_heads, size_t head_dim):
    """In place on X (t, n_heads*head_dim) at the given positions; FREQS (head_dim/2,) f32."""
    cdef size_t half = head_dim // 2, i
    cdef float *x = <float *>_wr(X, t * n_heads * head_dim * 4, "X")
    cdef const float *f = <const float *>_rd(FREQS, half * 4, "FREQS")
    if len(positions) != <Py_ssize_t>t:
        raise ValueError("need one position per row")
    cdef int64_t *pos = <int64_t *>PyMem_Malloc(max(t, 1) * sizeof(int64_t))
    cdef float *ct = <float *>PyMem_Malloc(max(t * half, 1) * sizeof(float))
    cdef float *st = <float *>PyMem_Malloc(max(t * half, 1) * sizeof(float))
    try:
        if not pos or not ct or not st:
            raise MemoryError()
        for i in range(t):
            pos[i] = positions[i]
        with nogil:
            lcx_rope_table(pos, t, f, half, ct, st)
            lcx_rope_f32(x, n_heads * head_dim, t, n_heads, head_dim, ct, st)
    finally:
        PyMem_Free(pos); PyMem_Free(ct); PyMem_Free(st)


def swiglu(A, B, size_t n):
    cdef float *a = <float *>_wr(A, n * 4, "A")
    cdef const float *b = <const float *>_rd(B, n * 4, "B")
    with nogil:
        lcx_swiglu_f32(a, b, n)


def softmax(X, size_t n):
    cdef float *x = <float *>_wr(X, n * 4, "X")
    with nogil:
        lcx_softmax_f32(x, n)


def argmax(X):
    """Index of the largest float32 in X (first on ties; NaN never wins)."""
    cdef const float[::1] x = memoryview(X).cast("B").cast("f")
    cdef size_t n = x.shape[0]
    if n == 0:
        raise ValueError("argmax of an empty vector")
    cdef int64_t r
    with nogil:
        r = lcx_argmax_f32(&x[0], n)
    return r


def attention(Q, KC, VC, OUT, size_t t, size_t pos0, size_t n_heads, size_t n_kv, size_t head_dim):
    """Causal GQA attention: Q (t, n_heads*hd) at positions pos0.., caches (pos0+t, n_kv*hd) -> OUT."""
    cdef size_t n_keys = pos0 + t, q_dim = n_heads * head_dim, kv_dim = n_kv * head_dim
    if n_kv == 0 or n_heads % n_kv:
        raise ValueError("n_heads must be a multiple of n_kv")
    cdef const float *q = <const float *>_rd(Q, t * q_dim * 4, "Q")
    cdef const float *kc = <const float *>_rd(KC, n_keys * kv_dim * 4, "KC")
    cdef const float *vc = <const float *>_rd(VC, n_keys * kv_dim * 4, "VC")
    cdef float *o = <float *>_wr(OUT, t * q_dim * 4, "OUT")
    cdef int nth = lcx_get_num_threads()
    cdef size_t stride = LCX_ATT_QB * n_keys  # score rows per thread
    cdef float *scratch = <float *>PyMem_Malloc(max(nth * stride, 1) * sizeof(float))
    if not scratch:
        raise MemoryError()
    try:
        with nogil:
            lcx_attention_f32(q, kc, vc, o, t, pos0, n_heads, n_kv, head_dim, scratch, stride, nth)
    finally:
        PyMem_Free(scratch)


def attention_decode(Q, KC, VC, OUT, size_t n_keys, size_t n_heads, size_t n_kv, size_t head_dim):
    """One query's GQA attention as a decode step runs it (parts of 512 keys merged by log-sum-exp):
    Q (n_heads*hd,) over caches (n_keys, n_kv*hd) -> OUT (n_heads*hd,)."""
    cdef size_t q_dim = n_heads * head_dim, kv_dim = n_kv * head_dim
    if n_kv == 0 or n_heads % n_kv or n_keys == 0:
        raise ValueError("n_heads must be a multiple of n_kv, n_keys >= 1")
    cdef const float *q = <const float *>_rd(Q, q_dim * 4, "Q")
    cdef const float *kc = <const float *>_rd(KC, n_keys * kv_dim * 4, "KC")
    cdef const float *vc = <const float *>_rd(VC, n_keys * kv_dim * 4, "VC")
    cdef float *o = <float *>_wr(OUT, q_dim * 4, "OUT")
    cdef int nth = lcx_get_num_threads()
    cdef size_t n_part = (n_keys + LCX_DEC_KC - 1) // LCX_DEC_KC * n_heads * (head_dim + 1)
    cdef float *scratch = <float *>PyMem_Malloc(nth * LCX_ATT_QB * LCX_DEC_KC * sizeof(float))
    cdef float *part = <float *>PyMem_Malloc(n_part * sizeof(float))
    if not scratch or not part:
        PyMem_Free(scratch)
        PyMem_Free(part)
        raise MemoryError()
    try:
        with nogil:
            lcx_attention_decode_f32(q, kc, vc, o, n_keys, n_heads, n_kv, head_dim, scratch, part, nth)
    finally:
        PyMem_Free(scratch)
        PyMem_Free(part)


def from_f32(SRC, str dtype, DST, size_t n):
    """DST (n,) of dtype <- SRC (n,) f32, rounded by the active ISA's from_f32 of the C table (KV cache rows)."""
    cdef int code = _code(dtype)
    cdef lcx_from_f32_fn f = lcx_from_f32_kernel(code)
    if f == NULL:
        raise ValueError(f"no f32 -> {dtype} conversion in the C table")
    cdef const float *s = <const float *>_rd(SRC, n * 4, "SRC")
    cdef unsigned char *d = _wr(DST, lcx_dtype_bytes(code, n), "DST")
    with nogil:
        f(s, d, n)


def to_f32(SRC, str dtype, DST, size_t n):
    """DST (n,) f32 <- SRC (n,) of any dtype of the C table (a converted copy, e.g. norm weights at load)."""
    cdef int code = _code(dtype)
    cdef lcx_to_f32_fn f = lcx_to_f32_kernel(code)
    if f == NULL:
        raise ValueError(f"{dtype} has no conversion to f32 (activation blocks only)")
    if n % lcx_dtypes[code].block_size:
        raise ValueError(f"{n} {dtype} elements: not a multiple of its block size {lcx_dtypes[code].block_size}")
    cdef const unsigned char *s = _rd(SRC, lcx_dtype_bytes(code, n), "SRC")
    cdef float *d = <float *>_wr(DST, n * 4, "DST")
    with nogil:
        f(s, d, n)


# ---- the model and its run state -----------------------------------------------------------------
cdef class CModel:
    """The C view of a loaded model: pointers into the weight buffers, which this object keeps alive."""
    cdef lcx_model m
    cdef lcx_layer *layers
    cdef list _keep  # memoryviews pinning every buffer a pointer was taken from

    def __cinit__(self):
        self.layers = NULL
        self._keep = []

    def __dealloc__(self):
        PyMem_Free(self.layers)

    cdef const void *_ptr(self, object buf, size_t offset, size_t nbytes, str what) except NULL:
        cdef const unsigned char[::1] mv = memoryview(buf).cast("B")
        if nbytes == 0 or offset > <size_t>mv.shape[0] or nbytes > <size_t>mv.shape[0] - offset:
            raise ValueError(f"{what}: {nbytes} bytes at offset {offset} do not fit its buffer")
        self._keep.append(mv)
        return &mv[offset]

    cdef lcx_mat _mat(self, tuple spec, size_t rows, size_t cols, str what) except *:
        # spec = (buffer, byte offset, dtype)
        cdef lcx_mat r
        buf, off, dtype = spec
        r.dtype = _gemm_code(dtype)
        r.data = self._ptr(buf, off, lcx_dtype_bytes(r.dtype, rows * cols), what)
        return r

    def __init__(self, dict cfg, dict mats, dict vecs, object rope_freqs):
        """cfg: sizes; mats: name -> (buffer, offset, dtype a product reads); vecs: name -> f32 buffer (norms)."""
        cdef int64_t L = cfg["n_layers"], dim = cfg["dim"], hd = cfg["head_dim"]
        cdef int64_t q_dim = cfg["n_heads"] * hd, kv_dim = cfg["n_kv_heads"] * hd, hidden = cfg["hidden_dim"]
        cdef int64_t vocab = cfg["vocab_size"], i
        self.m.dim = dim
        self.m.n_layers = L
        self.m.n_heads = cfg["n_heads"]
        self.m.n_kv_heads = cfg["n_kv_heads"]
        self.m.head_dim = hd
        self.m.hidden_dim = hidden
        self.m.vocab_size = vocab
        self.m.norm_eps = cfg["norm_eps"]
        self.layers = <lcx_layer *>PyMem_Malloc(max(L, 1) * sizeof(lcx_layer))
        if not self.layers:
            raise MemoryError()
        self.m.layers = self.layers
        self.m.tok_embeddings = self._mat(mats["tok_embeddings.weight"], vocab, dim, "tok_embeddings.weight")
        self.m.output = self._mat(mats["output.weight"], vocab, dim, "output.weight")
        self.m.norm = <const float *>self._ptr(vecs["norm.weight"], 0, dim * 4, "norm.weight")
        self.m.rope_freqs = <const float *>self._ptr(rope_freqs, 0, (hd // 2) * 4, "rope freqs")
        for i in range(L):
            p = f"layers.{i}."
            self.layers[i].wq = self._mat(mats[p + "attention.wq.weight"], q_dim, dim, p + "attention.wq.weight")
            self.layers[i].wk = self._mat(mats[p + "attention.wk.weight"], kv_dim, dim, p + "attention.wk.weight")
            self.layers[i].wv = self._mat(mats[p + "attention.wv.weight"], kv_dim, dim, p + "attention.wv.weight")
            self.layers[i].wo = self._mat(mats[p + "attention.wo.weight"], dim, q_dim, p + "attention.wo.weight")
            self.layers[i].w1 = self._mat(mats[p + "feed_forward.w1.weight"], hidden, dim, p + "feed_forward.w1.weight")
            self.layers[i].w2 = self._mat(mats[p + "feed_forward.w2.weight"], dim, hidden, p + "feed_forward.w2.weight")
            self.layers[i].w3 = self._mat(mats[p + "feed_forward.w3.weight"], hidden, dim, p + "feed_forward.w3.weight")
            self.layers[i].attn_norm = <const float *>self._ptr(vecs[p + "attention_norm.weight"], 0, dim * 4, p + "attention_norm.weight")
            self.layers[i].ffn_norm = <const float *>self._ptr(vecs[p + "ffn_norm.weight"], 0, dim * 4, p + "ffn_norm.weight")
        # the activation type the matrices' products can read (bf16 for bf16 weights), if they agree on one
        # (none when block types are among them: their one-token products quantize x themselves, and their
        # prompt blocks read f32)
        acts = {lcx_dtypes[_code(spec[2])].act_type for spec in mats.values()} - {-1}
        blocks = any(lcx_dtypes[_code(spec[2])].act_decode for spec in mats.values())
        self.m.act_type = acts.pop() if len(acts) == 1 and not blocks else -1

    def state_bytes(self, int64_t n_ctx, int64_t max_batch, int64_t n_threads, str kv_dtype="f32"):
        """Bytes lcx_state_new would allocate for a context (SIZE_MAX when it cannot exist): the one formula."""
        return lcx_state_bytes(&self.m, n_ctx, max_batch, n_threads, _kv_code(kv_dtype))

    def embedding_row(self, int64_t row, OUT):
        cdef float *d = <float *>_wr(OUT, self.m.dim * 4, "OUT")
        if row < 0 or row >= self.m.vocab_size:
            raise IndexError(f"token id {row} out of range [0, {self.m.vocab_size})")
        with nogil:
            lcx_row_to_f32(&self.m.tok_embeddings, self.m.dim, row, d)


cdef class CState:
    """Activation buffers + KV cache of one context (allocated once, freed with the object)."""
    cdef lcx_state *s
    cdef CModel model
    cdef int32_t *tok
    cdef readonly int64_t n_ctx, max_batch
    cdef readonly str kv_dtype

    def __cinit__(self, CModel model, int64_t n_ctx, int64_t max_batch, int64_t n_threads, str kv_dtype="f32"):
        self.s = NULL
        self.tok = NULL
        self.model = model
        self.n_ctx = n_ctx
        self.max_batch = max_batch
        self.kv_dtype = kv_dtype
        cdef int kv = _kv_code(kv_dtype)
        self.s = lcx_state_new(&model.m, n_ctx, max_batch, n_threads, kv)
        self.tok = <int32_t *>PyMem_Malloc(max(max_batch, 1) * sizeof(int32_t))
        if self.s is NULL or self.tok is NULL:
            raise MemoryError(
                f"cannot allocate the context state ({lcx_state_bytes(&model.m, n_ctx, max_batch, n_threads, kv) / 2**20:.0f} MiB)")

    def __dealloc__(self):
        lcx_state_free(self.s)
        PyMem_Free(self.tok)

    def set_max_threads(self, int64_t n):
        """At most n threads for this context's next calls (0: the process-wide count)."""
        self.s.max_threads = n if n > 0 else 0

    def forward(self, tokens, int64_t pos0, LOGITS=None, bint all_logits=False):
        """Run len(tokens) <= max_batch tokens at positions pos0..; logits (t or 1, vocab) into LOGITS."""
        cdef int64_t t = len(tokens), i, v = self.model.m.vocab_size, rc
        cdef float *lg = NULL
        if t < 1 or t > self.max_batch:
            raise ValueError(f"block of {t} tokens (1..{self.max_batch} allowed)")
        if pos0 < 0 or pos0 + t > self.n_ctx:
            raise ValueError(f"positions {pos0}..{pos0 + t - 1} do not fit the context of {self.n_ctx}")
        for i in range(t):
            tid = tokens[i]
            if not 0 <= tid < v:
                raise ValueError(f"token id {tid} out of range [0, {v})")
            self.tok[i] = tid
        if LOGITS is not None:
            lg = <float *>_wr(LOGITS, (t if all_logits else 1) * v * 4, "LOGITS")
        with nogil:
            rc = lcx_forward(&self.model.m, self.s, self.tok, t, pos0, lg, all_logits)
        if rc != 0:
            raise ValueError("forward: arguments do not fit the context state")



cdef class CBatch:
    """The work state of batched steps (lcx_batch_new): activations for up to max_tokens rows in all, attention
    scratch for contexts of up to n_ctx positions; the KV caches stay in each context's CState."""
    cdef lcx_state *s
    cdef CModel model
    cdef readonly int64_t n_ctx, max_tokens
    cdef readonly bint kv_conv

    def __cinit__(self, CModel model, int64_t n_ctx, int64_t max_tokens, int64_t n_threads, bint kv_conv=False):
        """kv_conv: it will run contexts whose KV cache is not f32 (it holds their widening scratch)."""
        self.s = NULL
        self.model = model
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        self.kv_conv = kv_conv
        self.s = lcx_batch_new(&model.m, n_ctx, max_tokens, n_threads, LCX_DT_BF16 if kv_conv else LCX_DT_F32)
        if self.s is NULL:
            raise MemoryError(f"cannot allocate a batch work state for {max_tokens} tokens")

    def __dealloc__(self):
        lcx_state_free(self.s)

    def forward(self, list states, list blocks, list positions, LOGITS=None, bint all_logits=False):
        """One step: blocks[i] (a list of token ids) at positions positions[i].. of CState states[i]; logits
        (len(states), vocab), or (sum of lengths, vocab) with all_logits, into LOGITS."""
        cdef int64_t n = len(states), t = 0, i, j, v = self.model.m.vocab_size, rc
        cdef CState st
        if n < 1 or len(blocks) != n or len(positions) != n:
            raise ValueError("states, blocks and positions must be non-empty and of one length")
        for i in range(n):
            st = states[i]
            if st.model is not self.model:
                raise ValueError(f"state {i} belongs to another model")
            if st.n_ctx > self.n_ctx:
                raise ValueError(f"state {i} has {st.n_ctx} positions, the work state {self.n_ctx}")
            if st.kv_dtype != "f32" and not self.kv_conv:
                raise ValueError(f"state {i} has a {st.kv_dtype} KV cache; the work state was made for f32 ones")
            t += len(blocks[i])
        if t > self.max_tokens:
            raise ValueError(f"{t} tokens in one step ({self.max_tokens} allowed)")
        cdef lcx_state **ps = <lcx_state **>PyMem_Malloc(n * sizeof(lcx_state *))
        cdef int64_t *nt = <int64_t *>PyMem_Malloc(n * sizeof(int64_t))
        cdef int64_t *p0 = <int64_t *>PyMem_Malloc(n * sizeof(int64_t))
        cdef int32_t *tok = <int32_t *>PyMem_Malloc(max(t, 1) * sizeof(int32_t))
        cdef float *lg = NULL
        try:
            if not ps or not nt or not p0 or not tok:
                raise MemoryError()
            t = 0
            for i in range(n):
                st = states[i]
                ps[i] = st.s
                nt[i] = len(blocks[i])
                p0[i] = positions[i]
                for j in range(nt[i]):
                    tid = blocks[i][j]
                    if not 0 <= tid < v:
                        raise ValueError(f"token id {tid} out of range [0, {v})")
                    tok[t] = tid
                    t += 1
            if LOGITS is not None:
                lg = <float *>_wr(LOGITS, (t if all_logits else n) * v * 4, "LOGITS")
            with nogil:
                rc = lcx_forward_batch(&self.model.m, self.s, ps, tok, nt, p0, n, lg, all_logits)
            if rc == -2:
                raise MemoryError("forward_batch: no memory for the step's scratch")
            if rc != 0:
                raise ValueError("forward_batch: arguments do not fit the states (empty block, positions past a "
                                 "context, or a state given twice)")
        finally:
            PyMem_Free(ps)
            PyMem_Free(nt)
            PyMem_Free(p0)
            PyMem_Free(tok)


# ---- tracing: the reference forward (csrc/model/reference.c) and test hooks on the fast one --------------
cdef extern from "model/reference.h" nogil:
    ctypedef struct lcx_trace:
        float *tok_embeddings
        float **attention_norm
        float **attention
        float **ffn_norm
        float **feed_forward
        float **layers
        float *norm
        float *output

    int lcx_forward_reference(const lcx_model *m, const int32_t *tokens, int64_t T, const lcx_trace *tr)

cdef extern from "lcx.h" nogil:
    ctypedef struct lcx_state_x "lcx_state":
        float *x


TRACE_LAYER_STAGES = ("attention_norm", "attention", "ffn_norm", "feed_forward", "layers")


cdef float **_layer_ptrs(dict out, str stage, int64_t n_layers, size_t need, list keep) except? NULL:
    """The [n_layers] pointer array of one per-layer stage (NULL when no layer of it is asked for)."""
    cdef int64_t i
    names = [f"layers.{i}.{stage}" if stage != "layers" else f"layers.{i}" for i in range(n_layers)]
    if not any(n in out for n in names):
        return NULL
    cdef float **p = <float **>PyMem_Malloc(n_layers * sizeof(float *))
    if not p:
        raise MemoryError()
    keep.append(<size_t>p)
    for i in range(n_layers):
        p[i] = <float *>_wr(out[names[i]], need, names[i]) if names[i] in out else NULL
    return p


def forward_reference(CModel model, tokens, dict out):
    """Run the reference forward over tokens (T,) at positions 0..T-1, writing the stages named in `out`
    (name -> writable f32 buffer: (T, dim), or (T, vocab) for "output"; names as in Meta's model, e.g.
    "layers.3.attention"). Unknown names are an error; stages not named are not kept."""
    cdef int64_t T = len(tokens), i, L = model.m.n_layers, v = model.m.vocab_size, rc
    cdef size_t row = T * model.m.dim * 4
    known = {"tok_embeddings", "norm", "output"} | {f"layers.{i}" for i in range(L)} | {
        f"layers.{i}.{s}" for i in range(L) for s in TRACE_LAYER_STAGES[:-1]}
    unknown = sorted(set(out) - known)
    if unknown:
        raise ValueError(f"unknown trace stage {unknown[0]!r}")
    if T < 1:
        raise ValueError("the reference forward needs at least one token")
    cdef int32_t *tok = <int32_t *>PyMem_Malloc(T * sizeof(int32_t))
    if not tok:
        raise MemoryError()
    cdef lcx_trace tr
    cdef list keep = []
    try:
        for i in range(T):
            t = tokens[i]
            if not 0 <= t < v:
                raise ValueError(f"token id {t} out of range [0, {v})")
            tok[i] = t
        tr.tok_embeddings = <float *>_wr(out["tok_embeddings"], row, "tok_embeddings") if "tok_embeddings" in out else NULL
        tr.norm = <float *>_wr(out["norm"], row, "norm") if "norm" in out else NULL
        tr.output = <float *>_wr(out["output"], T * v * 4, "output") if "output" in out else NULL
        tr.attention_norm = _layer_ptrs(out, "attention_norm", L, row, keep)
        tr.attention = _layer_ptrs(out, "attention", L, row, keep)
        tr.ffn_norm = _layer_ptrs(out, "ffn_norm", L, row, keep)
        tr.feed_forward = _layer_ptrs(out, "feed_forward", L, row, keep)
        tr.layers = _layer_ptrs(out, "layers", L, row, keep)
        with nogil:
            rc = lcx_forward_reference(&model.m, tok, T, &tr)
        if rc == -2:
            raise MemoryError(f"the reference forward cannot allocate its state for {T} tokens")
        if rc != 0:
            raise ValueError("the reference forward refused its arguments")
    finally:
        PyMem_Free(tok)
        for p in keep:
            PyMem_Free(<void *><size_t>p)


def logit_lens(CModel model, X, size_t t, OUT):
    """OUT (t, vocab) = output @ norm(X (t, dim)): the logits each row of a residual stream would give if the
    model stopped there (the fast kernels, threaded)."""
    cdef size_t dim = model.m.dim, vocab = model.m.vocab_size
    cdef const float *x = <const float *>_rd(X, t * dim * 4, "X")
    cdef float *o = <float *>_wr(OUT, t * vocab * 4, "OUT")
    cdef float *xn = <float *>PyMem_Malloc(max(t * dim, 1) * sizeof(float))
    if not xn:
        raise MemoryError()
    try:
        with nogil:
            lcx_rmsnorm_f32(x, model.m.norm, xn, t, dim, model.m.norm_eps)
            lcx_linear(model.m.output.data, model.m.output.dtype, xn, dim, o, vocab, vocab, dim, t, 0)
    finally:
        PyMem_Free(xn)


def model_prefix(CModel model, int64_t n_layers):
    """Test hook: a CModel that shares model's weights but stops after its first n_layers layers, so the fast
    forward's residual stream (state_residual) can be compared layer by layer."""
    if not 0 <= n_layers <= model.m.n_layers:
        raise ValueError(f"n_layers must be in [0, {model.m.n_layers}]")
    cdef CModel c = CModel.__new__(CModel)
    c.m = model.m
    c.m.n_layers = n_layers
    c._keep.append(model)  # the layer array and every weight buffer stay model's
    return c


def state_residual(CState state, OUT, size_t t):
    """Test hook: OUT (t, dim) = the residual stream x of the last forward call's t tokens (lcx_forward leaves it
    in the state: the final norm writes elsewhere)."""
    if t < 1 or <int64_t>t > state.max_batch:
        raise ValueError(f"t must be in [1, {state.max_batch}]")
    cdef size_t dim = state.model.m.dim
    cdef float *o = <float *>_wr(OUT, t * dim * 4, "OUT")
    memcpy(o, (<lcx_state_x *>state.s).x, t * dim * sizeof(float))


# ---- quantized GGUF blocks (csrc/kernels/quants.h): for tests and benchmarks ------------------------------
cdef extern from "kernels/quants.h" nogil:
    enum:
        LCX_QTYPE_COUNT
        LCX_QISA_COUNT
    ctypedef void (*lcx_dequant_fn)(const void *src, float *dst, size_t n)
    ctypedef void (*lcx_quant_act_fn)(const float *x, void *xq, size_t n)
    ctypedef void (*lcx_dot_fn)(const void *W, size_t row_bytes, const void *xq, float *y, size_t rows, size_t n)
    ctypedef void (*lcx_dotn_fn)(const void *W, size_t row_bytes, const void *xq, size_t xq_stride, size_t nx,
                                 float *y, size_t ldy, size_t rows, size_t n)
    ctypedef struct lcx_quant_traits:
        const char *name
        int ggml_type
        unsigned int block
        unsigned int block_bytes
        int act_type
        lcx_quant_act_fn quantize_x
        lcx_dequant_fn to_f32
        lcx_dot_fn dot
        lcx_dotn_fn dotn
    ctypedef struct lcx_qact_traits:
        const char *name
        unsigned int block
        unsigned int block_bytes
        lcx_quant_act_fn quantize
    const lcx_qact_traits lcx_qact[2]
    const lcx_quant_traits lcx_quant_generic[]
    int lcx_quant_isa_supported(int qisa)
    int lcx_quant_isa_best()
    const lcx_quant_traits *lcx_quant_table(int qisa)
    void lcx_linear_quant(const lcx_quant_traits *qt, const void *W, size_t row_bytes, const void *xq, float *y,
                          size_t rows, size_t n, int nthreads)
    int lcx_linear_quant_t(const lcx_quant_traits *qt, const void *W, size_t row_bytes, const float *X,
                           const uint16_t *Xh, const void *xq, float *Y, size_t rows, size_t n, size_t t, int beta,
                           int nthreads)
    void lcx_dequant_rows_bf16(const lcx_quant_traits *qt, const void *W, size_t row_bytes, size_t r0, size_t r1,
                               size_t n, uint16_t *dst, size_t ldd)

QUANT_ISAS = ("generic", "avx2", "avx512", "avx512vnni")


def quant_types():
    """Names of the quantized weight types with kernels, e.g. ["Q8_0", "Q4_0", ..., "Q6_K"]."""
    return [lcx_quant_generic[i].name.decode() for i in range(LCX_QTYPE_COUNT)]


def quant_isa_supported(str isa):
    if isa not in QUANT_ISAS:
        raise ValueError(f"unknown quantized-kernel path {isa!r}; choose one of {', '.join(QUANT_ISAS)}")
    return bool(lcx_quant_isa_supported(QUANT_ISAS.index(isa)))


def quant_best_isa():
    return QUANT_ISAS[lcx_quant_isa_best()]


cdef const lcx_quant_traits *_qtraits(str qtype, str isa) except NULL:
    if isa not in QUANT_ISAS:
        raise ValueError(f"unknown quantized-kernel path {isa!r}; choose one of {', '.join(QUANT_ISAS)}")
    cdef const lcx_quant_traits *t = lcx_quant_table(QUANT_ISAS.index(isa))
    if t is NULL:
        raise ValueError(f"quantized-kernel path {isa!r} is not supported on this CPU/build")
    cdef int i
    for i in range(LCX_QTYPE_COUNT):
        if t[i].name.decode() == qtype:
            return &t[i]
    raise ValueError(f"unknown quantized type {qtype!r}; choose one of {', '.join(quant_types())}")


cdef size_t _qrow_bytes(const lcx_quant_traits *t, size_t n) except 0:
    if n == 0 or n % t.block:
        raise ValueError(f"{t.name.decode()}: row length {n} is not a positive multiple of the block size {t.block}")
    return n // t.block * t.block_bytes


def quant_block(str qtype):
    """(weights per block, bytes per block, activation type name) of a quantized type."""
    cdef const lcx_quant_traits *t = _qtraits(qtype, "generic")
    return t.block, t.block_bytes, lcx_qact[t.act_type].name.decode()


def dequantize(str qtype, data, size_t n, str isa="generic"):
    """array('f') of the n weights in data (n / block whole blocks of qtype), as ggml dequantizes them, by the
    dequantizer of path isa (every path gives the same bits)."""
    from array import array
    cdef const lcx_quant_traits *t = _qtraits(qtype, isa)
    cdef size_t nbytes = _qrow_bytes(t, n)
    cdef const unsigned char *src = _rd(data, nbytes, "data")
    if (<size_t>src) % 2:
        raise ValueError("data must be 2-byte aligned (f16 scales)")
    out = array("f", bytes(4 * n))
    cdef float *dst = <float *>_wr(out, 4 * n, "out")
    with nogil:
        t.to_f32(src, dst, n)
    return out


def dequantize_rows_bf16(str qtype, W, size_t row_bytes, size_t rows, size_t n, str isa="generic"):
    """bytes of rows x n bf16: the prefill panel helper on whole rows of W."""
    cdef const lcx_quant_traits *t = _qtraits(qtype, isa)
    if _qrow_bytes(t, n) > row_bytes:
        raise ValueError(f"row_bytes {row_bytes} < {_qrow_bytes(t, n)} bytes of {n} {qtype} weights")
    cdef const unsigned char *w = _rd(W, rows * row_bytes, "W")
    if (<size_t>w) % 2 or row_bytes % 2:
        raise ValueError("W and row_bytes must be 2-byte aligned (f16 scales)")
    out = bytearray(2 * rows * n)
    cdef uint16_t *dst = <uint16_t *>_wr(out, 2 * rows * n, "out")
    with nogil:
        lcx_dequant_rows_bf16(t, w, row_bytes, 0, rows, n, dst, n)
    return bytes(out)


def quantize_act(str act_type, X, str isa="generic"):
    """bytes of the activation blocks ("Q8_0" or "Q8_K") of x (n,) f32, as ggml's reference quantizers, by
    the quantizer of path isa (every path gives the same bytes)."""
    cdef int a
    if act_type == "Q8_0":
        a = 0
    elif act_type == "Q8_K":
        a = 1
    else:
        raise ValueError(f"unknown activation type {act_type!r} (Q8_0 or Q8_K)")
    cdef const lcx_quant_traits *t = _qtraits("Q8_0" if a == 0 else "Q4_K", isa)  # a row that uses it
    cdef const float[::1] x = memoryview(X).cast("B").cast("f")
    cdef size_t n = x.shape[0], blk = lcx_qact[a].block
    if n == 0 or n % blk:
        raise ValueError(f"{act_type}: length {n} is not a positive multiple of {blk}")
    # 8-byte aligned storage (a q8_K block starts with an f32)
    from array import array
    buf = array("d", bytes((n // blk * lcx_qact[a].block_bytes + 7) // 8 * 8))
    cdef unsigned char *o = _wr(buf, n // blk * lcx_qact[a].block_bytes, "xq")
    with nogil:
        t.quantize_x(&x[0], o, n)
    return buf.tobytes()[: n // blk * lcx_qact[a].block_bytes]


def dot_rows(str qtype, str isa, W, size_t row_bytes, XQ, size_t rows, size_t n, int threads=1):
    """array('f') y (rows,) = W (rows, n) qtype @ x, XQ = quantize_act(x) bytes; the kernel of path isa,
    rows split over `threads` OpenMP threads."""
    from array import array
    cdef const lcx_quant_traits *t = _qtraits(qtype, isa)
    cdef size_t need = _qrow_bytes(t, n)
    if row_bytes < need:
        raise ValueError(f"row_bytes {row_bytes} < {need} bytes of {n} {qtype} weights")
    if threads < 1:
        raise ValueError(f"thread count must be >= 1, got {threads}")
    cdef const unsigned char *w = _rd(W, rows * row_bytes, "W")
    cdef size_t xbytes = n // lcx_qact[t.act_type].block * lcx_qact[t.act_type].block_bytes
    # copied into 8-byte aligned storage: a q8_K block starts with an f32
    xa = array("d", bytes((xbytes + 7) // 8 * 8))
    cdef unsigned char *xq = _wr(xa, xbytes, "xq")
    memcpy(xq, _rd(XQ, xbytes, "XQ"), xbytes)
    if (<size_t>w) % 2 or row_bytes % 2:
        raise ValueError("W and row_bytes must be 2-byte aligned (f16 scales)")
    y = array("f", bytes(4 * rows))
    cdef float *yp = <float *>_wr(y, 4 * rows, "y")
    with nogil:
        lcx_linear_quant(t, w, row_bytes, xq, yp, rows, n, threads)
    return y


def dot_rows_n(str qtype, str isa, W, size_t row_bytes, XQ, size_t nx, size_t rows, size_t n):
    """array('f') Y (nx, rows): Y[j] = W (rows, n) qtype @ x_j for the nx activation vectors whose
    quantize_act bytes are concatenated in XQ; the multi-vector kernel (dotn) of path isa, one thread."""
    from array import array
    cdef const lcx_quant_traits *t = _qtraits(qtype, isa)
    cdef size_t need = _qrow_bytes(t, n)
    if row_bytes < need:
        raise ValueError(f"row_bytes {row_bytes} < {need} bytes of {n} {qtype} weights")
    if nx == 0:
        raise ValueError("nx: at least one activation vector needed")
    cdef const unsigned char *w = _rd(W, rows * row_bytes, "W")
    if (<size_t>w) % 2 or row_bytes % 2:
        raise ValueError("W and row_bytes must be 2-byte aligned (f16 scales)")
    cdef size_t xbytes = n // lcx_qact[t.act_type].block * lcx_qact[t.act_type].block_bytes
    xa = array("d", bytes((nx * xbytes + 7) // 8 * 8))  # 8-byte aligned: a q8_K block starts with an f32
    cdef unsigned char *xq = _wr(xa, nx * xbytes, "xq")
    memcpy(xq, _rd(XQ, nx * xbytes, "XQ"), nx * xbytes)
    y = array("f", bytes(4 * nx * rows))
    cdef float *yp = <float *>_wr(y, 4 * nx * rows, "y")
    with nogil:
        t.dotn(w, row_bytes, xq, xbytes, nx, yp, rows, rows, n)
    return y


def linear_act(W, str wtype, XA, Y, size_t d, size_t n, size_t t, bint accumulate=False):
    """Y (t, d) = [Y +] XA @ Wᵀ for a quantized W (d, n) and XA the t rows of n values already converted to
    its activation type (quantize_act bytes, concatenated): the dtype row's gemm_act of the active ISA, one
    thread (decode's products of a batch of t sequences)."""
    cdef int code = _gemm_code(wtype), beta = 1 if accumulate else 0
    cdef lcx_gemm_act_fn gemm_act = lcx_gemm_act_kernel(code)
    if gemm_act == NULL or lcx_dtypes[code].act_type < 0 or lcx_dtypes[code].block_size <= 1:
        raise ValueError(f"{wtype}: no gemm_act over quantized activations")
    if n == 0 or n % lcx_dtypes[code].block_size:
        raise ValueError(f"{wtype}: row length {n} is not a positive multiple of the block size {lcx_dtypes[code].block_size}")
    cdef const lcx_dtype_traits *a = &lcx_dtypes[lcx_dtypes[code].act_type]
    cdef size_t xbytes = n // a.block_size * a.block_bytes
    cdef const void *w = _rd(W, lcx_dtype_bytes(code, d * n), "W")
    if (<size_t>w) % 2:
        raise ValueError("W must be 2-byte aligned (f16 scales)")
    from array import array
    xa = array("d", bytes((t * xbytes + 7) // 8 * 8))  # 8-byte aligned: a q8_K block starts with an f32
    cdef unsigned char *xq = _wr(xa, t * xbytes, "xq")
    memcpy(xq, _rd(XA, t * xbytes, "XA"), t * xbytes)
    cdef float *y = <float *>_wr(Y, t * d * 4, "Y")
    with nogil:
        gemm_act(w, n, xq, n, y, d, d, t, n, beta)


def linear_quant(str qtype, str isa, W, size_t row_bytes, X, Y, size_t rows, size_t n, size_t t, XQ=None,
                 bint accumulate=False, int threads=1, XH=None):
    """Y (t, rows) [+]= X (t, n) f32 @ Wᵀ, W (rows, row_bytes) quantized: with XQ (t == 1, XQ =
    quantize_act(x)) the integer row dots of path isa, without it exact f32 panels of W through the f32 gemm
    tile of the active ISA, or with XH (X rounded to bf16, (t, n) uint16) bf16 panels through the AVX512-BF16
    tile (lcx_linear_quant_rows, as the forward pass calls it)."""
    from array import array
    cdef const lcx_quant_traits *t_ = _qtraits(qtype, isa)
    cdef size_t need = _qrow_bytes(t_, n), xbytes
    if row_bytes < need:
        raise ValueError(f"row_bytes {row_bytes} < {need} bytes of {n} {qtype} weights")
    if threads < 1:
        raise ValueError(f"thread count must be >= 1, got {threads}")
    if XQ is not None and t != 1:
        raise ValueError(f"quantized activations are for one token (t = 1), got t = {t}")
    cdef const unsigned char *w = _rd(W, rows * row_bytes, "W")
    if (<size_t>w) % 2 or row_bytes % 2:
        raise ValueError("W and row_bytes must be 2-byte aligned (f16 scales)")
    cdef const float *x = <const float *>_rd(X, t * n * 4, "X")
    cdef float *y = <float *>_wr(Y, t * rows * 4, "Y")
    cdef const uint16_t *xh = NULL
    if XH is not None:
        if not lcx_avx512bf16_supported():
            raise ValueError("the AVX512-BF16 kernel is not available on this CPU/build")
        xh = <const uint16_t *>_rd(XH, t * n * 2, "XH")
    cdef unsigned char *xq = NULL
    if XQ is not None:
        xbytes = n // lcx_qact[t_.act_type].block * lcx_qact[t_.act_type].block_bytes
        xa = array("d", bytes((xbytes + 7) // 8 * 8))  # 8-byte aligned: a q8_K block starts with an f32
        xq = _wr(xa, xbytes, "xq")
        memcpy(xq, _rd(XQ, xbytes, "XQ"), xbytes)
    cdef int rc, beta = 1 if accumulate else 0
    with nogil:
        rc = lcx_linear_quant_t(t_, w, row_bytes, x, xh, xq, y, rows, n, t, beta, threads)
    if rc != 0:
        raise MemoryError("linear_quant: cannot allocate the dequantization panels")


# ---- offline quantizers (csrc/kernels/generic/quantize.c): `llama-cx quantize` ----------------------------------

cdef extern from "kernels/quantize.h" nogil:
    size_t lcx_quant_row_bytes(int type, int64_t n_per_row)
    size_t lcx_quantize_rows(int type, const float *src, void *dst, int64_t nrows, int64_t n_per_row)


def quant_row_bytes(int ggml_type, int64_t n_per_row):
    """Bytes of one quantized row of n_per_row elements; 0 for a type we do not write or a row length that is
    not a multiple of its block size."""
    return lcx_quant_row_bytes(ggml_type, n_per_row)


def quantize_rows(int ggml_type, SRC, DST, int64_t nrows, int64_t n_per_row):
    """SRC (nrows, n_per_row) f32 -> DST (nrows, quant_row_bytes) blocks of ggml type `ggml_type`, as ggml's
    reference quantizer writes them; rows split across threads. Returns the bytes written."""
    cdef size_t row_bytes = lcx_quant_row_bytes(ggml_type, n_per_row)
    if row_bytes == 0:
        raise ValueError(f"ggml type {ggml_type} cannot be written for rows of {n_per_row} elements")
    if nrows < 0:
        raise ValueError(f"nrows must not be negative, got {nrows}")
    cdef const float *src = <const float *>_rd(SRC, <size_t>nrows * <size_t>n_per_row * 4, "SRC")
    cdef void *dst = <void *>_wr(DST, <size_t>nrows * row_bytes, "DST")
    cdef size_t n
    with nogil:
        n = lcx_quantize_rows(ggml_type, src, dst, nrows, n_per_row)
    return n


# ---- perplexity (llama_cx/perplexity.py) -------------------------------------------------------------------------

from libc.math cimport expf, log

def nll_rows(LOGITS, size_t rows, size_t vocab, targets):
    """[-log softmax(LOGITS[i])[targets[i]] for i < rows] over LOGITS (rows, vocab) f32, as llama.cpp's
    perplexity computes it: float max, a double sum of expf(l - max), the result in double."""
    if len(targets) != rows:
        raise ValueError(f"{len(targets)} targets for {rows} rows")
    cdef const float *l = <const float *>_rd(LOGITS, rows * vocab * 4, "LOGITS")
    cdef size_t i, j, tok
    cdef float mx
    cdef double s
    out = []
    for i in range(rows):
        tok = targets[i]
        if tok >= vocab:
            raise ValueError(f"target {tok} out of range [0, {vocab})")
        with nogil:
            mx = l[i * vocab]
            for j in range(1, vocab):
                if l[i * vocab + j] > mx:
                    mx = l[i * vocab + j]
            s = 0.0
            for j in range(vocab):
                s += expf(l[i * vocab + j] - mx)
        out.append(-(<double>(l[i * vocab + tok] - mx) - log(s)))
    return out
