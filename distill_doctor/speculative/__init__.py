"""Speculative decoding as an outcome of distillation: how good a draft the student is.

- :mod:`.acceptance`: per-token acceptance ``1 - TV(p_T, p_S)`` along output texts;
- :mod:`.theory`: Leviathan et al.'s block efficiency and speedup, and a per-position check;
- :mod:`.cost`: the draft/teacher cost ratio measured on this machine;
- :mod:`.report`: the report's ``speculative`` block;
- :mod:`.sampler`: speculative sampling itself (draft with the student, verify with the teacher).
"""
