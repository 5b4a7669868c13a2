"""Chapter 7's exercises against a wrapper around the finished component and plausible wrong answers.

Each source replaces the exercise's solution cell in the kernel that executed the chapter (see
tests/test_exercises.py); the check cell must then raise ForbiddenCall (wrapper) or
AssertionError (wrong answers).
"""

VARIANTS = {
    "ch07-ex1-bloom-dedup": {
        # the chapter's exact deduplication (a set of fingerprints) does the job exactly
        "wrapper": """
def bloom_dedup(docs, n_bits, n_hashes):
    return exact_dedup(docs)
""",
        "wrong": {
            "sets the bits before looking at them (everything looks seen)": """
def bloom_dedup(docs, n_bits, n_hashes):
    bits, keep = np.zeros(n_bits, dtype=bool), []
    for i, doc in enumerate(docs):
        h = dedup_hash(doc)
        slots = [((h & 0xFFFFFFFF) + j * ((h >> 32) | 1)) % n_bits for j in range(n_hashes)]
        bits[slots] = True
        if not bits[slots].all():
            keep.append(i)
    return keep
""",
            "one set bit already counts as seen (any instead of all)": """
def bloom_dedup(docs, n_bits, n_hashes):
    bits, keep = np.zeros(n_bits, dtype=bool), []
    for i, doc in enumerate(docs):
        h = dedup_hash(doc)
        slots = [((h & 0xFFFFFFFF) + j * ((h >> 32) | 1)) % n_bits for j in range(n_hashes)]
        if not bits[slots].any():
            keep.append(i)
        bits[slots] = True
    return keep
""",
            "off by one: positions j = 1 ... n_hashes": """
def bloom_dedup(docs, n_bits, n_hashes):
    bits, keep = np.zeros(n_bits, dtype=bool), []
    for i, doc in enumerate(docs):
        h = dedup_hash(doc)
        slots = [((h & 0xFFFFFFFF) + j * ((h >> 32) | 1)) % n_bits for j in range(1, n_hashes + 1)]
        if not bits[slots].all():
            keep.append(i)
        bits[slots] = True
    return keep
""",
            "returns the documents, not their indices": """
def bloom_dedup(docs, n_bits, n_hashes):
    bits, keep = np.zeros(n_bits, dtype=bool), []
    for doc in docs:
        h = dedup_hash(doc)
        slots = [((h & 0xFFFFFFFF) + j * ((h >> 32) | 1)) % n_bits for j in range(n_hashes)]
        if not bits[slots].all():
            keep.append(doc)
        bits[slots] = True
    return keep
""",
        },
    },
    "ch07-ex2-smallest-hash-sample": {
        "wrapper": """
def smallest_hash_sample(docs, k):
    first = {}
    for doc in docs:
        first.setdefault(dedup_hash(doc), doc)
    return [first[h] for h in heapq.nsmallest(k, first)]
""",
        "wrong": {
            "sorts the whole corpus (holds every document)": """
def smallest_hash_sample(docs, k):
    first = {}
    for doc in docs:
        first.setdefault(dedup_hash(doc), doc)
    return [first[h] for h in sorted(first)[:k]]
""",
            "keeps both copies of a duplicated document": """
def smallest_hash_sample(docs, k):
    heap = []
    for doc in docs:
        h = dedup_hash(doc)
        if len(heap) < k:
            heapq.heappush(heap, (-h, doc))
        elif h < -heap[0][0]:
            heapq.heapreplace(heap, (-h, doc))
    return [doc for _, doc in sorted(heap, reverse=True)]
""",
            "the largest hashes instead of the smallest": """
def smallest_hash_sample(docs, k):
    heap, members = [], set()
    for doc in docs:
        h = dedup_hash(doc)
        if h in members:
            continue
        if len(heap) < k:
            heapq.heappush(heap, (h, doc))
            members.add(h)
        elif h > heap[0][0]:
            old, _ = heapq.heapreplace(heap, (h, doc))
            members.discard(old)
            members.add(h)
    return [doc for _, doc in sorted(heap)]
""",
        },
    },
    "ch07-ex3-contamination": {
        # the chapter's streaming index: add the training documents, then ask about each validation one
        "wrapper": """
def contaminated(train_docs, val_docs, threshold=0.8):
    index = NearDuplicateIndex(threshold)
    for doc in train_docs:
        index.add(doc)
    return [i for i, doc in enumerate(val_docs) if not index.add(doc)]
""",
        "wrong": {
            "exact duplicates only (misses near copies)": """
def contaminated(train_docs, val_docs, threshold=0.8):
    seen = {dedup_hash(doc) for doc in train_docs}
    return [i for i, doc in enumerate(val_docs) if dedup_hash(doc) in seen]
""",
            "the training documents' indices instead of the validation ones": """
def contaminated(train_docs, val_docs, threshold=0.8):
    hasher = MinHasher()
    val_sigs = np.stack([hasher(d) for d in val_docs]) if val_docs else np.zeros((0, 128))
    return [j for j, doc in enumerate(train_docs) if len(val_sigs) and (val_sigs == hasher(doc)).mean(axis=1).max() >= threshold]
""",
            "the threshold is ignored (always 0.8)": """
def contaminated(train_docs, val_docs, threshold=0.8):
    hasher = MinHasher()
    train_sigs = np.stack([hasher(d) for d in train_docs])
    return [i for i, doc in enumerate(val_docs) if (train_sigs == hasher(doc)).mean(axis=1).max() >= 0.8]
""",
        },
    },
}
