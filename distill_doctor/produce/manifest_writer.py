"""The provenance manifest (SPEC "Provenance manifest"), written from what actually ran.

Nothing here is typed in by hand: the teacher's name comes from its config or folder, its
revision from the weights' sha256 (and the commit, when the folder is a hub snapshot or a git
checkout), its license from the user, else the folder's README front matter or LICENSE file,
else ``"unknown"``; filter counts and the decontamination record come from the pipeline's
result; ``dataset_sha256`` is computed from the training file after it was written.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distill_doctor import __version__
from distill_doctor.atomic import atomic_write_text
from distill_doctor.data.fingerprint import file_sha256

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.DOTALL)
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
# First-lines signatures of license files -> SPDX id (lower case, as the license table uses).
_LICENSE_TEXT = (
    (re.compile(r"apache license.{0,40}version 2\.0", re.I | re.S), "apache-2.0"),
    (re.compile(r"^\s*mit license", re.I | re.M), "mit"),
    (re.compile(r"permission is hereby granted, free of charge", re.I), "mit"),
    (re.compile(r"gnu general public license.{0,40}version 3", re.I | re.S), "gpl-3.0"),
    (re.compile(r"gnu general public license.{0,40}version 2", re.I | re.S), "gpl-2.0"),
    (re.compile(r"creative commons attribution-noncommercial", re.I), "cc-by-nc-4.0"),
    (re.compile(r"llama 2 community license", re.I), "llama2"),
    (re.compile(r"llama 3\.1 community license", re.I), "llama3.1"),
    (re.compile(r"gemma terms of use", re.I), "gemma"),
)


def weights_sha256(model_dir: str | Path) -> str | None:
    """``sha256:<hex>`` of the weights: of the file itself when there is one, else of the sorted
    ``"<name> <sha256>"`` lines of all weight files (shards). None when the folder has no weights."""
    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        return None
    if len(files) == 1:
        return "sha256:" + file_sha256(files[0])
    listing = "".join(f"{p.name} {file_sha256(p)}\n" for p in files)
    return "sha256:" + hashlib.sha256(listing.encode("utf-8")).hexdigest()


def git_commit(model_dir: str | Path) -> str | None:
    """The commit of a hub cache snapshot (``.../snapshots/<sha>/``) or of a git checkout's HEAD."""
    model_dir = Path(model_dir).resolve()
    if model_dir.parent.name == "snapshots" and _HEX40.match(model_dir.name):
        return model_dir.name
    head = model_dir / ".git" / "HEAD"
    try:
        ref = head.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if _HEX40.match(ref):
        return ref
    if ref.startswith("ref: "):
        try:
            sha = (model_dir / ".git" / ref[5:]).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return sha if _HEX40.match(sha) else None
    return None


def model_name(model_dir: str | Path) -> str:
    """The config's ``_name_or_path`` when it names a hub model (not a local path), else the folder name."""
    model_dir = Path(model_dir)
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    name = config.get("_name_or_path") if isinstance(config, dict) else None
    if (
        isinstance(name, str)
        and name.strip()
        and not name.startswith(("/", ".", "~"))
        and not Path(name).exists()
    ):
        return name.strip()
    return model_dir.resolve().name


def detect_license(model_dir: str | Path) -> tuple[str, str]:
    """``(license, where it came from)``: README front matter ``license:``, a recognised LICENSE
    file, else ``("unknown", "not found")``."""
    model_dir = Path(model_dir)
    readme = model_dir / "README.md"
    if readme.is_file():
        m = _FRONT_MATTER.match(readme.read_text(encoding="utf-8", errors="replace"))
        if m:
            import yaml

            try:
                meta = yaml.safe_load(m.group(1))
            except yaml.YAMLError:
                meta = None
            value = meta.get("license") if isinstance(meta, dict) else None
            if isinstance(value, str) and value.strip():
                return value.strip(), "README.md front matter"
    for name in ("LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING"):
        path = model_dir / name
        if path.is_file():
            head = path.read_text(encoding="utf-8", errors="replace")[:4000]
            for pattern, spdx in _LICENSE_TEXT:
                if pattern.search(head):
                    return spdx, name
            return "unknown", f"{name} (text not recognised)"
    return "unknown", "not found"


def describe_model(model_dir: str | Path, *, license: str | None = None) -> dict[str, Any]:
    """The manifest's model block: name, revision, license (+ where the license came from, weights hash)."""
    weights = weights_sha256(model_dir)
    commit = git_commit(model_dir)
    if license:
        lic, where = license, "given by the user"
    else:
        lic, where = detect_license(model_dir)
    block: dict[str, Any] = {
        "name": model_name(model_dir),
        "revision": commit or weights,
        "license": lic,
        "license_source": where,
        "path": str(Path(model_dir).resolve()),
    }
    if weights:
        block["weights_sha256"] = weights
    if commit:
        block["commit"] = commit
    return block


def build_manifest(
    *,
    teacher: dict[str, Any],
    prompts: list[dict[str, Any]],
    generation: dict[str, Any],
    filters: list[dict[str, Any]],
    decontamination: dict[str, Any],
    dataset_path: str | Path,
    student_base: dict[str, Any] | None = None,
    counts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest mapping, in the SPEC's field order; ``dataset_sha256`` is read from the file now."""
    manifest: dict[str, Any] = {"teacher": teacher}
    if student_base is not None:
        manifest["student_base"] = student_base
    manifest.update(
        prompts=prompts,
        generation=generation,
        filters=filters,
        decontamination=decontamination,
        dataset_sha256=file_sha256(dataset_path),
        dataset={"path": str(Path(dataset_path).resolve()), **(counts or {})},
        created_by={
            "tool": f"distill-doctor {__version__}",
            "command": "generate",
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )
    return manifest


def manifest_text(manifest: dict[str, Any], path: str | Path) -> str:
    """YAML for ``.yaml``/``.yml``, JSON otherwise (values made plain first: str subclasses such as
    ``torch.__version__``, numpy numbers)."""
    manifest = json.loads(json.dumps(manifest, default=str))
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        return yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, width=100)
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def write_manifest(manifest: dict[str, Any], path: str | Path) -> Path:
    """Write the manifest atomically (YAML or JSON by suffix)."""
    return atomic_write_text(Path(path), manifest_text(manifest, path))
