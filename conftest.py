"""Set-up shared by the tests and the docstring examples: their temporary files go to pytest's own folder.

The examples make folders with ``tempfile.mkdtemp()`` and nothing removes them; with ``tempfile.tempdir``
(and ``TMPDIR`` for the processes the tests start) pointing into pytest's base folder, they go where
pytest keeps the last three runs and removes older ones, instead of piling up in /tmp.
"""

from __future__ import annotations

import os
import tempfile

import pytest


@pytest.fixture(autouse=True, scope="session")
def _temporary_files_in_pytest_folder(tmp_path_factory: pytest.TempPathFactory):
    folder = str(tmp_path_factory.mktemp("tempfile"))
    old_dir, old_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = folder
    os.environ["TMPDIR"] = folder
    yield
    tempfile.tempdir = old_dir
    if old_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old_env
