"""Text toolkit shared by the probes and the data producers: word and style features
(``text_features``), MinHash sketches (``minhash``) and near-duplicate search
(``near_duplicates``), word n-gram overlap and edited-copy search (``overlap``), rolling window
hashes (``window_hash``). It reads plain strings and knows nothing of items, verdicts or models."""
