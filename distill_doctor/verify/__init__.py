"""Verifiers: extract final answers, judge outputs against references, run code in a sandbox."""

from distill_doctor.verify.code import build_program, last_code_block, verify_code
from distill_doctor.verify.extract import canonical_exact, extract_answer, parse_number
from distill_doctor.verify.sandbox import SandboxResult, containment, run_python, run_tests
from distill_doctor.verify.verifiers import reference_answer, verify, verify_outputs

__all__ = [
    "SandboxResult",
    "build_program",
    "canonical_exact",
    "containment",
    "extract_answer",
    "last_code_block",
    "parse_number",
    "reference_answer",
    "run_python",
    "run_tests",
    "verify",
    "verify_code",
    "verify_outputs",
]
