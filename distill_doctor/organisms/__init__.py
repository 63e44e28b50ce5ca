"""The model organisms as a library: tiny distillation runs, each planted with one failure mode.

- :mod:`.catalog`: find built organisms under a fixtures folder (:func:`discover`) and the mode
  each was planted with (:func:`planted_mode`); what ``distill-doctor demo`` runs on.
- :mod:`.tasks`, :mod:`.sorting`: the task suites (chained arithmetic and string operations; the
  sorting trace of the ``exposure_bias`` organism), deterministic from a seed.
- :mod:`.recipes`: model sizes, data sizes and training settings, full and quick.
- :mod:`.generate`, :mod:`.runs`, :mod:`.build_lib`: greedy generation, training runs through
  ``distill-doctor train`` and the build's file writers and manifests, shared by
  ``fixtures/organisms/build.py`` (which rebuilds the committed organisms) and ``research/``.

The data and weights live in ``fixtures/organisms/``; this package holds no files of its own.
"""

from distill_doctor.organisms.catalog import Organism, discover, planted_mode

__all__ = ["Organism", "discover", "planted_mode"]
