"""local.image_env: the scikit-learn image's Python on this machine, built once and then left alone."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from local import image_env


@pytest.fixture
def current_env(tmp_path: Path) -> Path:
    """An environment whose stamp matches this machine's interpreter and pins: nothing to rebuild."""
    try:
        interpreter = image_env.find_interpreter()
    except image_env.ImageEnvError as exc:
        pytest.skip(str(exc))
    venv = tmp_path / "venv"
    image_env.venv_python(venv).parent.mkdir(parents=True)
    image_env.venv_python(venv).touch()
    (venv / image_env.STAMP_NAME).write_text(json.dumps({"fingerprint": image_env._fingerprint(interpreter),
                                                         "note": "built earlier"}))
    return venv


def test_a_current_environment_is_not_rebuilt_and_its_stamp_is_renewed_for_make(current_env: Path) -> None:
    stamp = current_env / image_env.STAMP_NAME
    content = stamp.read_text()
    os.utime(stamp, (0, 0))  # older than .venv/.installed, as after a reinstall of the project's packages
    said: list[str] = []

    python = image_env.ensure(current_env, say=said.append)

    assert python == image_env.venv_python(current_env)
    assert said == []  # nothing built
    assert stamp.stat().st_mtime > time.time() - 60
    assert stamp.read_text() == content
