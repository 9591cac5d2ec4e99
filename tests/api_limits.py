"""Where a request breaks the limits of the real API model that botocore's client does not check.

botocore's ParamValidator checks types, required members and minimums; the service enforces maxima, enums and
patterns, where a build would fail only after it trained. This walks a request along its botocore input shape.
"""

from __future__ import annotations

import re
from typing import Any


def limit_problems(shape: Any, value: Any, where: str) -> list[str]:
    """Enums, maxima (length of strings, lists and maps; value of numbers) and patterns, of every member, list
    item, map key and map value. Patterns with Unicode classes (\\p{...}) are skipped: Python's re has none."""
    problems: list[str] = []
    enum = getattr(shape, "enum", None)
    if enum and value not in enum:
        problems.append(f"{where}: {value!r} is not one of {enum}")
    limit = shape.metadata.get("max")
    if limit is not None and isinstance(value, str | list | dict) and len(value) > limit:
        problems.append(f"{where}: length {len(value)} > {limit}")
    if limit is not None and isinstance(value, int | float) and not isinstance(value, bool) and value > limit:
        problems.append(f"{where}: {value} > {limit}")
    pattern = shape.metadata.get("pattern")
    if isinstance(value, str) and pattern and "\\p{" not in pattern and not re.fullmatch(pattern, value):
        problems.append(f"{where}: {value!r} does not match {pattern}")
    container: Any = value  # the isinstance checks above narrowed `value`; the shape says what it is
    if shape.type_name == "structure":
        for name, item in container.items():
            problems += limit_problems(shape.members[name], item, f"{where}.{name}")
    elif shape.type_name == "list":
        for index, item in enumerate(container):
            problems += limit_problems(shape.member, item, f"{where}[{index}]")
    elif shape.type_name == "map":
        for key, item in container.items():
            problems += limit_problems(shape.key, key, f"{where} key {key!r}")
            problems += limit_problems(shape.value, item, f"{where}[{key}]")
    return problems
