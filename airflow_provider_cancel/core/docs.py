"""Task documentation: the class docstring is what a person reads in the Airflow UI.

Airflow 3.3's UI shows a task's ``doc_md`` (task page -> "Task Documentation"; REST ``GET
/dags/{dag_id}/tasks/{task_id}``), never its class docstring. So the operators and sensors of this provider
fill ``doc_md`` from their class docstring, converted to Markdown, unless the DAG author wrote a doc of their
own. The shared arguments are written once, on the base class, and appended to each subclass's docstring, so
``help()``, Sphinx and the UI all list every argument.
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any

DOC_ATTRIBUTES = ("doc", "doc_md", "doc_rst", "doc_json", "doc_yaml")
_PARAM = re.compile(r"^:param (\w+):", re.MULTILINE)


def param_block(doc: str | None) -> str:
    """The ``:param ...:`` fields of a docstring, with their indented continuation lines."""
    kept: list[str] = []
    inside = False
    for line in inspect.cleandoc(doc or "").splitlines():
        if line.startswith(":param "):
            inside = True
        elif not line.startswith(" "):
            inside = False
        if inside:
            kept.append(line)
    return "\n".join(kept)


def inherit_params(cls: type, base: type, heading: str) -> None:
    """Append ``base``'s ``:param:`` fields, under ``heading``, to ``cls``'s own docstring."""
    own = cls.__dict__.get("__doc__")
    shared = param_block(base.__doc__)
    if cls is base or not own or not shared or heading in own:
        return
    cls.__doc__ = f"{inspect.cleandoc(own)}\n\n{heading}\n\n{shared}\n"


def documented_params(cls: type) -> set[str]:
    """The argument names a class's docstring documents (for tests)."""
    return set(_PARAM.findall(inspect.cleandoc(cls.__doc__ or "")))


@functools.cache
def task_doc_md(cls: type) -> str | None:
    """The nearest class docstring as Markdown: ``:param x:`` fields become a list, RST ``literals`` code."""
    doc = next((c.__dict__["__doc__"] for c in cls.__mro__ if c.__dict__.get("__doc__")), None)
    if not doc:
        return None
    lines: list[str] = []
    in_list = False
    for line in inspect.cleandoc(doc).splitlines():
        if line.startswith(":param "):
            if not in_list and lines and lines[-1]:
                lines.append("")  # a Markdown list needs a blank line before it
            in_list = True
            line = _PARAM.sub(r"- **\1**:", line)
        elif in_list and line.startswith(" "):
            line = "  " + line.strip()  # a continuation of the list item
        else:
            in_list = False
        lines.append(line)
    return re.sub(r"``(.+?)``", r"`\1`", "\n".join(lines), flags=re.DOTALL)


def default_doc_md(task: Any) -> None:
    """Set ``task.doc_md`` from its class docstring when the DAG author gave the task no doc of their own."""
    if not any(getattr(task, name, None) for name in DOC_ATTRIBUTES):
        cls: type = type(task)
        task.doc_md = task_doc_md(cls)
