"""The scikit-learn image's Python on this machine: `.venv-image`, for running our code the way the image does.

SageMaker runs training jobs and endpoints in the scikit-learn image 1.4-2: Python 3.10 with the packages in
`local/image-requirements.txt`, among them the two toolkits that launch our code, `sagemaker-training`
(training: `train`, honouring SAGEMAKER_BASE_DIR) and `sagemaker-containers` (serving: the Transformer and
its gunicorn/Flask worker). Their pins clash with the project's (Flask 1.1, protobuf 3.20, boto3 1.28), so
they live in a virtualenv of their own, built from pyenv's Python 3.10 (or `python3.10` on PATH); without
one, the nearest Python 3 that can install the pins is used, and every run says so.

    python -m local.image_env            build it if missing or stale, print its python
    python -m local.image_env --check    exit 1 if it is missing or stale (nothing is built)

The one patch the image's Dockerfile applies to its packages is applied here too: sagemaker-containers
2.8.6.post2 uses `collections.Mapping`, gone since Python 3.10; the image rewrites it to
`collections.abc.Mapping` in `sagemaker_containers/_mapping.py`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE_VENV = REPO_ROOT / ".venv-image"
REQUIREMENTS = Path(__file__).with_name("image-requirements.txt")
CONSTRAINTS = Path(__file__).with_name("image-constraints.txt")
IMAGE_PYTHON = (3, 10)
STAMP_NAME = ".installed.json"
PYENV_ROOTS = (Path(os.environ.get("PYENV_ROOT", "")) if os.environ.get("PYENV_ROOT") else None,
               Path.home() / ".pyenv")
# Versions the image's pins install on, nearest first, when 3.10 is not on the machine.
FALLBACK_ORDER = ((3, 11), (3, 9), (3, 12))
_MAPPING_PATCH = ("collections.Mapping", "collections.abc.Mapping")

Say = Callable[[str], None]


class ImageEnvError(RuntimeError):
    """The image environment cannot be built; the message says what is missing and what to install."""


@dataclass(frozen=True)
class Interpreter:
    path: Path
    version: tuple[int, int]

    @property
    def is_image_version(self) -> bool:
        return self.version == IMAGE_PYTHON

    @property
    def note(self) -> str:
        label = f"Python {self.version[0]}.{self.version[1]}"
        if self.is_image_version:
            return f"{label} ({self.path}), the image's Python"
        return (f"{label} ({self.path}) -- NOT the image's Python 3.10, which this machine lacks: results may "
                "differ from the image where the two Pythons differ; install 3.10 (pyenv install 3.10) to match")


def _version_of(python: Path) -> tuple[int, int] | None:
    try:
        done = subprocess.run([str(python), "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    parts = done.stdout.split()
    if done.returncode != 0 or len(parts) != 2:
        return None
    return int(parts[0]), int(parts[1])


def _candidates(version: tuple[int, int]) -> list[Path]:
    found: list[Path] = []
    for root in PYENV_ROOTS:
        if root is None or not (root / "versions").is_dir():
            continue
        prefix = f"{version[0]}.{version[1]}."
        for entry in sorted((root / "versions").iterdir(), reverse=True):
            if entry.name.startswith(prefix) and (entry / "bin" / "python").exists():
                found.append(entry / "bin" / "python")
    on_path = shutil.which(f"python{version[0]}.{version[1]}")
    if on_path:
        found.append(Path(on_path))
    return found


def find_interpreter() -> Interpreter:
    """Python 3.10 if the machine has it, else the nearest version the pins install on."""
    for version in (IMAGE_PYTHON, *FALLBACK_ORDER):
        for path in _candidates(version):
            if _version_of(path) == version:
                return Interpreter(path, version)
    raise ImageEnvError(
        "no Python 3.10 (the scikit-learn image's) nor 3.9/3.11/3.12 found under pyenv or on PATH; "
        "install one, e.g. `pyenv install 3.10`, then rerun"
    )


def _fingerprint(interpreter: Interpreter) -> str:
    digest = hashlib.sha256()
    for path in (REQUIREMENTS, CONSTRAINTS):
        if path.is_file():
            digest.update(path.read_bytes())
    digest.update(str(interpreter.path).encode())
    return digest.hexdigest()


def venv_python(venv: Path = IMAGE_VENV) -> Path:
    return venv / "bin" / "python"


def _stamp(venv: Path) -> dict[str, str]:
    try:
        value = json.loads((venv / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def is_current(venv: Path = IMAGE_VENV, interpreter: Interpreter | None = None) -> bool:
    if not venv_python(venv).exists():
        return False
    stamp = _stamp(venv)
    if not stamp:
        return False
    interpreter = interpreter or find_interpreter()
    return stamp.get("fingerprint") == _fingerprint(interpreter)


def _patch_sagemaker_containers(python: Path) -> Path:
    """Apply the image's one source patch; returns the patched file."""
    done = subprocess.run(
        [str(python), "-c",
         "import importlib.util as u; print(u.find_spec('sagemaker_containers').submodule_search_locations[0])"],
        capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise ImageEnvError(f"sagemaker-containers is not importable in {python}: {done.stderr.strip()[-400:]}")
    mapping = Path(done.stdout.strip()) / "_mapping.py"
    text = mapping.read_text()
    old, new = _MAPPING_PATCH
    patched = re.sub(rf"\b{re.escape(old)}\b", new, text)
    if patched != text:
        mapping.write_text(patched)
    return mapping


def build(venv: Path = IMAGE_VENV, say: Say = print, interpreter: Interpreter | None = None) -> Path:
    """Create (or recreate) the image environment; returns its python. Shows pip's progress."""
    interpreter = interpreter or find_interpreter()
    say(f"image environment {venv.name}: building with {interpreter.note}")
    say(f"  installs the scikit-learn image's packages ({REQUIREMENTS.name}: numpy, scikit-learn, pandas, pyarrow, "
        "sagemaker-training, sagemaker-containers, Flask, gevent, gunicorn, ...); 30 to 50 s on a 2-core machine")
    started = time.monotonic()
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([str(interpreter.path), "-m", "venv", str(venv)], check=True)
    python = venv_python(venv)
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
               "-r", str(REQUIREMENTS)]
    if CONSTRAINTS.is_file():
        command += ["-c", str(CONSTRAINTS)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        line = line.rstrip()
        if "is ignored: it is neither a file nor a directory" in line:
            continue  # a pip.conf find-links entry of this machine, not our concern
        tail = [*tail[-40:], line]
        if line.startswith(("Collecting ", "Installing collected", "Successfully installed")):
            say(f"  {line[:150]}")
    if process.wait() != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise ImageEnvError("pip could not install the image's packages into "
                            f"{venv}:\n" + "\n".join(tail[-20:]))
    patched = _patch_sagemaker_containers(python)
    say(f"  applied the image's patch to {patched.relative_to(venv)} (collections.Mapping -> collections.abc.Mapping)")
    stamp = {"fingerprint": _fingerprint(interpreter), "python": str(interpreter.path),
             "version": f"{interpreter.version[0]}.{interpreter.version[1]}", "note": interpreter.note}
    (venv / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n")
    say(f"image environment ready in {time.monotonic() - started:.0f}s: {python}")
    return python


def ensure(venv: Path = IMAGE_VENV, say: Say = print) -> Path:
    """The image environment's python, built first if it is missing or stale."""
    interpreter = find_interpreter()
    if is_current(venv, interpreter):
        # make compares the stamp with what it depends on (.venv's own stamp): a current environment's stamp is
        # renewed, or every later `make test` / `make demo` would run this again.
        (venv / STAMP_NAME).touch()
        return venv_python(venv)
    return build(venv, say, interpreter)


def note(venv: Path = IMAGE_VENV) -> str:
    """Which Python the environment was built with (for run logs and test reports)."""
    return _stamp(venv).get("note", "not built")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.image_env", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if missing or stale; build nothing")
    args = parser.parse_args(argv)
    try:
        if args.check:
            current = is_current()
            print(f"{IMAGE_VENV.name}: {'current' if current else 'missing or stale'} ({note()})")
            return 0 if current else 1
        python = ensure()
    except ImageEnvError as exc:
        print(f"image environment: {exc}", file=sys.stderr)
        return 1
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
