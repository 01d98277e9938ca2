import os

import pytest

from entrolab.fileio import atomic_write_text


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "out.json"
    assert atomic_write_text(path, "first é") == path
    atomic_write_text(path, "second")
    assert path.read_text(encoding="utf-8") == "second"
    assert os.listdir(tmp_path) == ["out.json"]
    assert (path.stat().st_mode & 0o777) == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "bad \udcff surrogate")  # cannot be encoded as UTF-8
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_missing_parent_folders_are_created(tmp_path):
    # `entrolab analyze --json new/dir/traces.json` writes through here; the folder did not exist
    path = tmp_path / "new" / "dir" / "traces.json"
    atomic_write_text(path, "{}")
    assert path.read_text() == "{}" and os.listdir(path.parent) == ["traces.json"]
