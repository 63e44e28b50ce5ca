"""License terms that matter when a model's outputs train another model.

A documented table, not legal advice. Each entry says what the terms mean for *distillation*
(training a student on the teacher's outputs) and what the provenance probe does about it:

| category | meaning | verdict for a teacher / student base |
|---|---|---|
| ``permissive`` | SPDX open licenses (apache-2.0, mit, bsd-*, cc0-1.0, cc-by-4.0, ...) | ok |
| ``copyleft`` | share-alike / GPL family: outputs may train; derivatives keep the terms | ok (noted) |
| ``conditional`` | allowed with conditions: Llama 3.1+ ("Llama" must begin the model name, "Built with Llama"), Gemma (a distilled model is a "Model Derivative" bound by Gemma's terms), OpenRAIL use restrictions, Tongyi Qianwen, DeepSeek model license | warn |
| ``restricted_outputs`` | the terms forbid using outputs to improve other models: Llama 2 (except Llama 2 derivatives), Llama 3.0 (except Llama 3 derivatives), OpenAI / Anthropic / Google API terms (no competing models) | fail |
| ``noncommercial`` | CC-BY-NC*, "research only", Qwen research, Mistral non-production | fail |
| ``unknown`` | missing, "unknown", "other", "proprietary", ... | fail for the teacher, warn elsewhere |
| ``unlisted`` | a name neither in the table nor matching its patterns | warn (check its terms on outputs) |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERDICT_OF_CATEGORY = {
    "permissive": "ok",
    "copyleft": "ok",
    "conditional": "warn",
    "restricted_outputs": "fail",
    "noncommercial": "fail",
    "unknown": "fail",
    "unlisted": "warn",
}

# id -> (category, note). Ids are SPDX where one exists (lower case), else the Hub's license tag.
LICENSES: dict[str, tuple[str, str]] = {
    "apache-2.0": ("permissive", ""),
    "mit": ("permissive", ""),
    "bsd-2-clause": ("permissive", ""),
    "bsd-3-clause": ("permissive", ""),
    "isc": ("permissive", ""),
    "unlicense": ("permissive", ""),
    "cc0-1.0": ("permissive", ""),
    "cc-by-4.0": ("permissive", "attribution required"),
    "cc-by-3.0": ("permissive", "attribution required"),
    "odc-by": ("permissive", "attribution required"),
    "pddl": ("permissive", ""),
    "mpl-2.0": ("copyleft", "file-level copyleft"),
    "cc-by-sa-4.0": ("copyleft", "share-alike"),
    "cc-by-sa-3.0": ("copyleft", "share-alike"),
    "gpl-2.0": ("copyleft", "derivatives stay GPL"),
    "gpl-3.0": ("copyleft", "derivatives stay GPL"),
    "lgpl-3.0": ("copyleft", ""),
    "agpl-3.0": ("copyleft", "network use counts as distribution"),
    "openrail": ("conditional", "OpenRAIL use restrictions travel with derivatives"),
    "openrail-m": ("conditional", "OpenRAIL-M use restrictions travel with derivatives"),
    "bigscience-openrail-m": ("conditional", "use restrictions travel with derivatives"),
    "bigscience-bloom-rail-1.0": ("conditional", "use restrictions travel with derivatives"),
    "creativeml-openrail-m": ("conditional", "use restrictions travel with derivatives"),
    "llama3.1": (
        "conditional",
        "Llama 3.1 license: outputs may train other models; the model name must begin with 'Llama'",
    ),
    "llama3.2": (
        "conditional",
        "Llama 3.2 license: outputs may train other models; the model name must begin with 'Llama'",
    ),
    "llama3.3": (
        "conditional",
        "Llama 3.3 license: outputs may train other models; the model name must begin with 'Llama'",
    ),
    "llama4": (
        "conditional",
        "Llama 4 license: outputs may train other models; the model name must begin with 'Llama'",
    ),
    "gemma": (
        "conditional",
        "Gemma terms: a model distilled from Gemma outputs is a Model Derivative bound by them",
    ),
    "tongyi-qianwen": ("conditional", "Tongyi Qianwen license: commercial use limits by user count"),
    "deepseek": ("conditional", "DeepSeek model license: use restrictions travel with derivatives"),
    "llama2": (
        "restricted_outputs",
        "Llama 2 license: outputs may not improve any LLM other than Llama 2 derivatives",
    ),
    "llama3": (
        "restricted_outputs",
        "Llama 3 (3.0) license: outputs may not improve any LLM other than Llama 3 derivatives",
    ),
    "openai-terms": ("restricted_outputs", "OpenAI terms: outputs may not develop competing models"),
    "anthropic-terms": ("restricted_outputs", "Anthropic terms: outputs may not build competing models"),
    "gemini-api-terms": ("restricted_outputs", "Google API terms: outputs may not develop competing models"),
    "cc-by-nc-4.0": ("noncommercial", "non-commercial"),
    "cc-by-nc-3.0": ("noncommercial", "non-commercial"),
    "cc-by-nc-sa-4.0": ("noncommercial", "non-commercial, share-alike"),
    "cc-by-nc-sa-3.0": ("noncommercial", "non-commercial, share-alike"),
    "cc-by-nc-nd-4.0": ("noncommercial", "non-commercial, no derivatives"),
    "cc-by-nd-4.0": ("noncommercial", "no derivatives"),
    "qwen-research": ("noncommercial", "Qwen research license: non-commercial"),
    "mnpl": ("noncommercial", "Mistral non-production license"),
    "research-only": ("noncommercial", "research only"),
}

ALIASES = {
    "apache": "apache-2.0",
    "apache2": "apache-2.0",
    "apache-2": "apache-2.0",
    "apache-license-2.0": "apache-2.0",
    "apache-license-version-2.0": "apache-2.0",
    "mit-license": "mit",
    "cc0": "cc0-1.0",
    "cc-by": "cc-by-4.0",
    "cc-by-sa": "cc-by-sa-4.0",
    "cc-by-nc": "cc-by-nc-4.0",
    "cc-by-nc-sa": "cc-by-nc-sa-4.0",
    "llama-2": "llama2",
    "llama-2-community-license": "llama2",
    "llama2-community": "llama2",
    "llama-3": "llama3",
    "llama3-community": "llama3",
    "llama-3.1": "llama3.1",
    "llama-3.2": "llama3.2",
    "llama-3.3": "llama3.3",
    "llama-4": "llama4",
    "gemma-terms": "gemma",
    "gemma-terms-of-use": "gemma",
    "openai": "openai-terms",
    "openai-tos": "openai-terms",
    "openai-terms-of-use": "openai-terms",
    "anthropic": "anthropic-terms",
    "anthropic-tos": "anthropic-terms",
    "gemini": "gemini-api-terms",
    "qianwen": "tongyi-qianwen",
    "mistral-research": "mnpl",
    "mistral-non-production": "mnpl",
    "research": "research-only",
    "research-use-only": "research-only",
    "non-commercial": "cc-by-nc-4.0",
    "noncommercial": "cc-by-nc-4.0",
}
_UNKNOWN = {"", "unknown", "other", "none", "n/a", "na", "proprietary", "custom", "tbd", "?"}


@dataclass(frozen=True)
class LicenseInfo:
    given: str | None
    id: str | None  # the table id (SPDX where one exists), None when not recognised
    category: str
    note: str

    @property
    def verdict(self) -> str:
        return VERDICT_OF_CATEGORY[self.category]


def _key(text: str) -> str:
    return re.sub(r"[\s_]+", "-", text.strip().lower())


def classify_license(value: object) -> LicenseInfo:
    """Classify a manifest's license string (SPDX id, Hub tag or common name) into the table's categories."""
    if value is None or not isinstance(value, str | int | float):
        return LicenseInfo(None, None, "unknown", "no license given")
    given = str(value)
    key = _key(given)
    if key in _UNKNOWN:
        return LicenseInfo(given, None, "unknown", "license unknown")
    key = ALIASES.get(key, key)
    if key in LICENSES:
        category, note = LICENSES[key]
        return LicenseInfo(given, key, category, note)
    # Patterns for names outside the table, most restrictive first.
    if re.search(r"(non-?commercial|\bnc\b|-nc-|-nc$|research)", key):
        return LicenseInfo(given, None, "noncommercial", "non-commercial or research-only terms")
    if re.search(r"llama-?2", key):
        return LicenseInfo(given, "llama2", *LICENSES["llama2"])
    if re.search(r"llama-?3\.?[1-9]|llama-?4", key):
        return LicenseInfo(
            given, None, "conditional", "Llama 3.1+ terms: naming requirements for trained models"
        )
    if re.search(r"llama-?3", key):
        return LicenseInfo(given, "llama3", *LICENSES["llama3"])
    if "gemma" in key:
        return LicenseInfo(given, "gemma", *LICENSES["gemma"])
    if re.search(r"openai|anthropic|claude|gpt-?4|gemini", key):
        return LicenseInfo(given, None, "restricted_outputs", "API terms forbid training competing models")
    return LicenseInfo(given, None, "unlisted", "license not in the table; check its terms on outputs")
