"""Outputs that appear only when a step succeeds, and the failure message SageMaker shows when it does not.

A later step picks up whatever sits in a folder (register reads model.joblib, Train reads the splits), so a
failed run must leave nothing there: not a half-written file, and not the previous run's file either.
run_step is how prepare, train and evaluate end: the exit code the build reads and the message SageMaker shows.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import contracts
from training.data_contract import DataRejected

# SageMaker keeps the first 1 KB of a failure message (FailureReason, ExitMessage).
FAILURE_MESSAGE_BYTES = 1024
# Present in every SageMaker training and processing container; its absence means a laptop or a build box,
# where a default container path must not be written.
_CONTAINER_ROOT = Path("/opt/ml")


@contextmanager
def staged_files(finals: Iterable[Path]) -> Iterator[dict[Path, Path]]:
    """Yield {final path: path to write instead}; move every file into place only if the block succeeds.

    Earlier copies of the final files are removed on entry, so a run that fails leaves none of them.
    A file the block did not write is not created.
    """
    targets = list(dict.fromkeys(finals))
    for final in targets:
        final.unlink(missing_ok=True)
    staged = {final: final.parent / f".{final.name}.partial" for final in targets}
    for path in staged.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
    try:
        yield staged
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise
    for final, path in staged.items():
        if path.exists():
            os.replace(path, final)


def failure_file(explicit: Path | None) -> Path | None:
    """Where a failed processing job leaves its message: `explicit` if given, else contracts.EXIT_MESSAGE_FILE
    inside a SageMaker container, else nowhere (a laptop or a build box prints it only)."""
    if explicit is not None:
        return explicit
    return Path(contracts.EXIT_MESSAGE_FILE) if _CONTAINER_ROOT.is_dir() else None


def write_failure_message(path: Path | None, message: str) -> None:
    """Write the message (cut to what SageMaker keeps) to `path`, if there is one."""
    if path is None:
        return
    data = message.encode("utf-8")
    if len(data) > FAILURE_MESSAGE_BYTES:
        data = data[:FAILURE_MESSAGE_BYTES - 3].decode("utf-8", errors="ignore").encode("utf-8") + b"..."
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def run_step(work: Callable[[], object], *, failure: Path | None, failed: str,
             expected: tuple[type[Exception], ...] = ()) -> int:
    """Run a step's work and return its exit code: 0; contracts.EXIT_DATA_REJECTED when the data contract
    rejects the data (the message starts with contracts.DATA_REJECTED_MARKER, which the build looks for); 1 on
    anything else. The message goes to stderr and to `failure` (what SageMaker reports for the job):
    `<failed>: <message>` for the `expected` errors, whose message says it all, a traceback on stderr for others.
    """
    try:
        work()
    except DataRejected as exc:
        message = f"{contracts.DATA_REJECTED_MARKER} {exc}"
        print(message, file=sys.stderr, flush=True)
        write_failure_message(failure, message)
        return contracts.EXIT_DATA_REJECTED
    except expected as exc:
        message = f"{failed}: {exc}"
        print(message, file=sys.stderr, flush=True)
        write_failure_message(failure, message)
        return 1
    except Exception as exc:
        traceback.print_exc()
        write_failure_message(failure, f"{failed}: {type(exc).__name__}: {exc}")
        return 1
    return 0
