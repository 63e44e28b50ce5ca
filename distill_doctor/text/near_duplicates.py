"""Near-duplicate detection with MinHash LSH (datasketch 2.0), confirmed by exact Jaccard.

Texts are normalised (lower-case words, see ``text_features.words``) and shingled into word
n-grams (5 by default; a text shorter than that is one shingle). MinHash sketches are built
with ``MinHash.bulk`` under the explicit ``affine32`` scheme (datasketch 2.0's default;
sketches from 1.x used the ``legacy`` scheme and are not comparable). The LSH index is
queried at a *lower* threshold than the one reported (LSH recall near its own threshold is
poor) and every candidate pair is confirmed with the exact Jaccard of the shingle sets.

Template shingles are dropped first: a shingle found in more than ``max_df`` of the texts
(and in more than ``min_df_count`` texts) is boilerplate (a shared instruction, a fixed
solution format), not content. Without this, templated training sets put every row in the
same LSH buckets (quadratic work) and make unrelated problems look alike. Exact duplicates
should be counted before calling this (a text repeated thousands of times would have its
own shingles dropped as boilerplate).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

from distill_doctor.text import minhash
from distill_doctor.text.text_features import words

SCHEME = minhash.SCHEME
HASHFUNC = "sha1_hash32"


@dataclass(frozen=True)
class NearDupConfig:
    num_perm: int = 128
    shingle_words: int = 5
    lsh_threshold: float = 0.5  # candidate generation
    jaccard_threshold: float = 0.7  # confirmed pairs
    max_candidates: int = 50  # per query, bounds the work on huge buckets
    max_df: float = 0.01  # shingles in more than this share of texts are boilerplate
    min_df_count: int = 50  # ... and in more than this many texts
    seed: int = 1

    def record(self) -> dict:
        """What a report must state to make the result reproducible."""
        return minhash.record(**asdict(self), hashfunc=HASHFUNC)


def shingles(text: str, n: int) -> set[str]:
    """Word ``n``-gram shingles (joined by spaces) of the normalised text."""
    return minhash.word_shingles(words(text), n)


def near_duplicate_pairs(
    texts: list[str], config: NearDupConfig | None = None
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, jaccard) with i < j whose shingle Jaccard is >= ``config.jaccard_threshold``.

    Empty texts are skipped. Identical texts are found too; callers that count exact
    duplicates separately should drop those first.
    """
    from datasketch import MinHashLSH

    cfg = config or NearDupConfig()
    sets = [shingles(t, cfg.shingle_words) for t in texts]
    df = Counter(g for s in sets for g in s)
    cutoff = max(cfg.min_df_count, cfg.max_df * len(sets))
    boilerplate = {g for g, c in df.items() if c > cutoff}
    if boilerplate:
        sets = [s - boilerplate for s in sets]
    keep = [i for i, s in enumerate(sets) if s]
    if len(keep) < 2:
        return []
    encoded = [[g.encode("utf-8") for g in sets[i]] for i in keep]
    sketches = minhash.sketches(encoded, num_perm=cfg.num_perm, seed=cfg.seed)
    lsh = MinHashLSH(threshold=cfg.lsh_threshold, num_perm=cfg.num_perm)
    with lsh.insertion_session() as session:
        for i, mh in zip(keep, sketches):
            session.insert(i, mh, check_duplication=False)
    pairs: list[tuple[int, int, float]] = []
    for i, mh in zip(keep, sketches):
        cands = sorted(j for j in lsh.query(mh) if j > i)[: cfg.max_candidates]
        pairs.extend((i, j, jac) for j, jac in minhash.confirmed(cands, sets[i], sets, cfg.jaccard_threshold))
    return pairs
