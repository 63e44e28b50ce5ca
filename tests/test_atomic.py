import os

from distill_doctor.atomic import atomic_write_text


def test_atomic_write_gives_ordinary_permissions_and_keeps_existing_ones(tmp_path):
    old = os.umask(0o022)
    try:
        new = atomic_write_text(tmp_path / "a.txt", "x")
        assert new.stat().st_mode & 0o777 == 0o644
        existing = tmp_path / "b.txt"
        existing.write_text("old")
        existing.chmod(0o640)
        atomic_write_text(existing, "new")
        assert existing.read_text() == "new"
        assert existing.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
