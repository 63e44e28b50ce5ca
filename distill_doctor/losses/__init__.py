"""Distillation losses: pure, shape-documented functions of logits (or hidden states) and masks.

* ``table``: the divergences (name, the extra argument each needs); config validation reads it.
* ``per_token`` / ``divergences``: per-token divergences from log-probabilities, and the dense
  losses on logits built on them; ``cross_entropy`` and ``vocab`` (padded vocabularies) beside.
* ``closed_form`` / ``chunked``: the same losses from final hidden states, chunk by chunk, with
  closed-form logit gradients, so full (tokens x vocabulary) logits never exist.
* ``topk``: the loss against a teacher's cached top-k log-probs and tail mass.
* ``batch`` / ``kd``: what a loss reads from a training micro-batch, and the dense teacher-student
  loss of one micro-batch.
* ``reduction``: which tokens count and the sum / num_tokens normalisation all of them share.

Nothing here imports ``distill_doctor.train``: training imports losses, never the other way.
"""
