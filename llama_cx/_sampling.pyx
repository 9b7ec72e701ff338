# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The hot part of sampling: filtering and drawing from one logits vector (vocab up to 128k+ entries).

Pipeline for one step, in this order (the order Meta's reference and Hugging Face use):
  repeat penalty on the raw logits -> temperature -> top-k -> softmax -> top-p -> min-p -> draw.
temperature == 0 is greedy: argmax of the penalised logits (ties: lowest id).

Candidates are ranked by (logit desc, id asc): a strict total order, so selection, sorting and the
draw are deterministic, and ranking by logit equals ranking by probability.

Performance notes (128256-entry vocab, one thread; best of 5 x 50 draws on a shared, busy 2-core
x86-64 box, so read them as upper bounds):
- Greedy and top-k read the vector once with a size-k heap: ~0.2 ms. (A quickselect over the 16-byte
  candidates measured 1.6 ms for k=40.) With top-k, exp() runs over k entries only.
- Without top-k, one exp() per entry is most of the cost: expf (float) instead of exp (double) took a
  temperature-only draw from ~1.7 to ~1.1 ms and min-p from ~1.5 to ~0.8 ms; weights are summed in
  double. float precision (1e-7 relative) is far below anything sampling can notice.
- top-p without top-k: a 64-bucket histogram of the mass by power of two of w finds a threshold 2^-b
  whose set {w >= 2^-b} holds the nucleus; within it a quickselect that carries the mass of the known
  head finds the nucleus in O(n) without sorting: ~1.1 ms on peaked logits, ~3.8 ms on the
  near-uniform logits of a random model (nearly all 128k tokens in the nucleus). qsort of the set
  instead measured ~10 ms there.
- min-p needs no order (keep w >= min_p * w_max), so it runs before top-p and shrinks the set top-p
  works on. Both keep a prefix of the same ranking, so their order does not change the outcome.
"""
from libc.math cimport expf, frexp, ldexp, isnan, isinf, INFINITY
from libc.stdlib cimport malloc, free, qsort


cdef struct Cand:
    double w       # unnormalised probability expf((logit - max) / T); 0 before the softmax pass
    float logit    # logit after the repeat penalty; -inf for NaN
    int id


cdef inline bint _ranks_before(const Cand* a, const Cand* b) noexcept nogil:
    """True when a ranks strictly before b: larger logit, then smaller id."""
    return a.logit > b.logit or (a.logit == b.logit and a.id < b.id)


cdef int _cmp_rank(const void* pa, const void* pb) noexcept nogil:
    cdef const Cand* a = <const Cand*>pa
    cdef const Cand* b = <const Cand*>pb
    if _ranks_before(a, b):
        return -1
    if _ranks_before(b, a):
        return 1
    return 0


cdef enum:
    _N_BUCKETS = 64


cdef inline int _bucket(double w) noexcept nogil:
    """b with 2^-b <= w < 2^(1-b) for 0 < w <= 1 (w = 1 is bucket 0); tiny and zero w share the last."""
    cdef int e
    if w <= 0.0:
        return _N_BUCKETS - 1
    frexp(w, &e)  # w = f * 2^e, f in [0.5, 1)
    e = 1 - e
    return e if e < _N_BUCKETS - 1 else _N_BUCKETS - 1


cdef inline bint _worse(const float* lg, int a, int b) noexcept nogil:
    """Token a ranks strictly after token b: smaller logit, then larger id."""
    return lg[a] < lg[b] or (lg[a] == lg[b] and a > b)


cdef void _sift_down(const float* lg, Cand* h, Py_ssize_t k, Py_ssize_t i) noexcept nogil:
    """Restore the heap below h[i]; the root h[0] is the worst-ranked kept token."""
    cdef Py_ssize_t child
    cdef Cand t = h[i]
    while True:
        child = 2 * i + 1
        if child >= k:
            break
        if child + 1 < k and _worse(lg, h[child + 1].id, h[child].id):
            child += 1
        if not _worse(lg, h[child].id, t.id):
            break
        h[i] = h[child]
        i = child
    h[i] = t


cdef Py_ssize_t _heap_top(const float* lg, Py_ssize_t n, Py_ssize_t k, Cand* out) noexcept nogil:
    """The k best-ranked of lg[0:n] into out[0:k], in rank order; returns k.

    One pass with a size-k min-heap: for random logits almost every entry fails the single
    comparison with the root, so this reads the vector once (O(n + k log k log n) typical).
    """
    cdef Py_ssize_t i, j
    cdef Cand t
    for i in range(k):
        out[i].id = <int>i
    for i in range(k // 2 - 1, -1, -1):
        _sift_down(lg, out, k, i)
    for i in range(k, n):
        if _worse(lg, out[0].id, <int>i):
            out[0].id = <int>i
            _sift_down(lg, out, k, 0)
    for i in range(k):
        out[i].logit = lg[out[i].id]
    qsort(out, k, sizeof(Cand), _cmp_rank)
    return k


cdef inline void _swap(Cand* c, Py_ssize_t i, Py_ssize_t j) noexcept nogil:
    cdef Cand t = c[i]
    c[i] = c[j]
    c[j] = t


cdef Py_ssize_t _nucleus(Cand* c, Py_ssize_t m, double target) noexcept nogil:
    """Reorder c[0:m] so that c[0:keep] is the smallest best-ranked head whose mass reaches target; returns keep.

    A quickselect on rank that carries the mass of the part known to be in the head: O(m) expected, no sort.
    The head comes out unordered. If rounding leaves the whole set short of target, all m are kept.
    """
    cdef Py_ssize_t lo = 0, hi = m, mid, i, p
    cdef double acc = 0.0, before
    cdef Cand pivot
    while hi - lo > 0:
        # median of three (by rank) into c[hi - 1] as the pivot
        mid = lo + (hi - lo) // 2
        if hi - lo >= 3:
            if _ranks_before(&c[mid], &c[lo]):
                _swap(c, mid, lo)
            if _ranks_before(&c[hi - 1], &c[lo]):
                _swap(c, hi - 1, lo)
            if _ranks_before(&c[mid], &c[hi - 1]):
                _swap(c, mid, hi - 1)
        pivot = c[hi - 1]
        p = lo
        before = 0.0
        for i in range(lo, hi - 1):
            if _ranks_before(&c[i], &pivot):
                before += c[i].w
                _swap(c, i, p)
                p += 1
        _swap(c, p, hi - 1)
        # c[lo:p] rank before the pivot (mass `before`), c[p] is the pivot, c[p+1:hi] rank after it
        if acc + before >= target:
            hi = p
        elif acc + before + c[p].w >= target:
            return p + 1
        else:
            acc += before + c[p].w
            lo = p + 1
    return lo if lo > 0 else 1


cdef Py_ssize_t _argmax(const float[::1] x) noexcept nogil:
    """Index of the largest entry, lowest index on ties; NaN never wins. -1 if every entry is NaN."""
    cdef Py_ssize_t i, best = -1
    cdef float v, bv = -INFINITY
    for i in range(x.shape[0]):
        v = x[i]
        if isnan(v):
            continue
        if best < 0 or v > bv:
            best = i
            bv = v
    return best


def argmax(const float[::1] logits):
    """Greedy choice: index of the largest logit (lowest index on ties)."""
    cdef Py_ssize_t i
    with nogil:
        i = _argmax(logits)
    if i < 0:
        raise ValueError("logits are all NaN")
    return i


cdef class SamplerCore:
    """Work buffers for one vocabulary size plus the filter/draw routines over them.

    Not thread-safe: one instance per sampler. `logits` is never modified.
    """
    cdef Cand* cand          # (vocab,) candidates; valid range [0, n_kept) after _filter
    cdef float* work         # (vocab,) private copy of the logits, penalised
    cdef Py_ssize_t vocab
    cdef Py_ssize_t n_kept
    cdef double kept_sum     # sum of w over the kept candidates
    cdef bint sorted_kept    # cand[0:n_kept] is in rank order

    def __cinit__(self, Py_ssize_t vocab):
        if vocab <= 0:
            raise ValueError(f"vocab size must be positive, got {vocab}")
        self.cand = <Cand*>malloc(vocab * sizeof(Cand))
        self.work = <float*>malloc(vocab * sizeof(float))
        if self.cand == NULL or self.work == NULL:
            raise MemoryError()
        self.vocab = vocab
        self.n_kept = 0

    def __dealloc__(self):
        free(self.cand)
        free(self.work)

    @property
    def vocab_size(self):
        return self.vocab

    cdef int _filter(self, const float[::1] logits, const int[::1] penalty_ids, double penalty,
                     double temperature, Py_ssize_t top_k, double top_p, double min_p) noexcept nogil:
        """Fill cand[0:n_kept] with the candidates that survive every filter, with their weights.

        temperature == 0 keeps the single best-ranked token. Returns 0, or -1 when no logit is finite.
        """
        cdef Cand* c = self.cand
        cdef float* lg = self.work
        cdef Py_ssize_t n = logits.shape[0], i, j, m
        cdef float v, lmax
        cdef double z, w, cum, target, eps
        cdef float inv_t_f
        cdef int tid, b
        cdef double hist[_N_BUCKETS]

        # Private copy of the logits (the model's buffer is read-only to us); NaN can never be drawn.
        for i in range(n):
            v = logits[i]
            lg[i] = -INFINITY if isnan(v) else v

        # Repeat penalty (CTRL / llama.cpp): push each recent token's logit towards "less likely".
        # penalty_ids are unique, so each token is penalised once.
        if penalty != 1.0:
            for j in range(penalty_ids.shape[0]):
                tid = penalty_ids[j]
                if 0 <= tid < n:
                    if lg[tid] > 0:
                        lg[tid] = <float>(lg[tid] / penalty)
                    else:
                        lg[tid] = <float>(lg[tid] * penalty)

        self.sorted_kept = False
        if temperature == 0.0:
            top_k = 1
        if 0 < top_k < n:
            m = _heap_top(lg, n, top_k, c)
            self.sorted_kept = True
        else:
            m = n
            for i in range(n):
                c[i].logit = lg[i]
                c[i].id = <int>i
        if temperature == 0.0:
            self.n_kept = 1
            self.kept_sum = 1.0
            c[0].w = 1.0
            return -1 if (isinf(c[0].logit) and c[0].logit < 0) else 0

        lmax = -INFINITY
        for i in range(m):
            if c[i].logit > lmax:
                lmax = c[i].logit
        if isinf(lmax) and lmax < 0:
            return -1

        # Softmax weights over the top-k set (w_max = 1). exp(-inf) = 0: -inf logits get no mass.
        inv_t_f = <float>(1.0 / temperature)
        z = 0.0
        for i in range(m):
            w = expf((c[i].logit - lmax) * inv_t_f)
            c[i].w = w
            z += w

        # min-p: keep p >= min_p * p_max, i.e. w >= min_p. Order-preserving compaction.
        if min_p > 0.0:
            j = 0
            for i in range(m):
                if c[i].w >= min_p:
                    c[j] = c[i]
                    j += 1
            m = j

        # top-p: the smallest head, in rank order, whose mass reaches top_p of the top-k set's mass z.
        # A histogram of the mass by power of two of w says which {w >= 2^-b} already holds the target; the
        # head lies inside it (one bucket of slack for rounding), so compact to that set first. Then a
        # mass-carrying quickselect finds the head without sorting (a heap-ordered top-k set is just walked).
        if top_p < 1.0:
            target = top_p * z
            if self.sorted_kept:
                cum = 0.0
                for i in range(m):
                    cum += c[i].w
                    if cum >= target:
                        m = i + 1
                        break
            else:
                for j in range(_N_BUCKETS):
                    hist[j] = 0.0
                for i in range(m):
                    hist[_bucket(c[i].w)] += c[i].w
                cum = 0.0
                b = _N_BUCKETS - 1
                for j in range(_N_BUCKETS):
                    cum += hist[j]
                    if cum >= target:
                        b = j + 1
                        break
                if b < _N_BUCKETS - 1:
                    eps = ldexp(1.0, -b)  # w >= 2^-b  <=>  bucket(w) <= b
                    j = 0
                    for i in range(m):
                        if c[i].w >= eps:
                            c[j] = c[i]
                            j += 1
                    m = j
                m = _nucleus(c, m, target)

        z = 0.0
        for i in range(m):
            z += c[i].w
        self.n_kept = m
        self.kept_sum = z
        return 0

    def sample(self, const float[::1] logits, const int[::1] penalty_ids, double penalty,
               double temperature, Py_ssize_t top_k, double top_p, double min_p, double r):
        """Draw one token id. r is a uniform number in [0, 1) from the caller's own RNG."""
        cdef Py_ssize_t i, n = logits.shape[0]
        cdef int rc, best = -1
        cdef double target, cum
        cdef Cand* c = self.cand
        if n > self.vocab:
            raise ValueError(f"logits have {n} entries, the sampler was built for {self.vocab}")
        with nogil:
            rc = self._filter(logits, penalty_ids, penalty, temperature, top_k, top_p, min_p)
            if rc == 0:
                target = r * self.kept_sum
                cum = 0.0
                best = c[self.n_kept - 1].id  # rounding guard: r * sum can land past the last cumsum
                for i in range(self.n_kept):
                    cum += c[i].w
                    if target < cum:
                        best = c[i].id
                        break
        if rc != 0:
            raise ValueError("logits contain no finite value")
        return best

    def filtered(self, const float[::1] logits, const int[::1] penalty_ids, double penalty,
                 double temperature, Py_ssize_t top_k, double top_p, double min_p):
        """The distribution `sample` draws from: (ids, probs), best-ranked first, probs summing to 1."""
        cdef Py_ssize_t i, n = logits.shape[0]
        cdef int rc
        if n > self.vocab:
            raise ValueError(f"logits have {n} entries, the sampler was built for {self.vocab}")
        with nogil:
            rc = self._filter(logits, penalty_ids, penalty, temperature, top_k, top_p, min_p)
            if rc == 0 and not self.sorted_kept:
                qsort(self.cand, self.n_kept, sizeof(Cand), _cmp_rank)
        if rc != 0:
            raise ValueError("logits contain no finite value")
        ids = [self.cand[i].id for i in range(self.n_kept)]
        probs = [self.cand[i].w / self.kept_sum for i in range(self.n_kept)]
        return ids, probs
