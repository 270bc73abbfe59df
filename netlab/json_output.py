"""What `--json` prints: one object per command, naming its schema.

Every document starts with `"schema": "netlab/<command>/v1"`; the JSON Schema that
describes it ships as netlab/schemas/<command>.v1.json (docs/json.md). Fields may be
added within v1; removing or renaming one makes v2. An error (exit 1, 2 or 3) is the
command's document with one field, `error`: its code, message and the lab file's
problems.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from netlab.errors import LabError, NetlabError, Problem

VERSION = "v1"
COMMANDS = (
    "check",
    "status",
    "doctor",
    "render",
    "graph",
    "trace",
    "exec",
    "impair",
    "link",
    "validate",
)  # each has netlab/schemas/<command>.v1.json


def schema_id(command: str) -> str:
    return f"netlab/{command}/{VERSION}"


def document(command: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"schema": schema_id(command), **fields}


def dumps(command: str, fields: dict[str, Any]) -> str:
    return json.dumps(document(command, fields), indent=2)


def error_fields(error: NetlabError) -> dict[str, Any]:
    problems = error.problems if isinstance(error, LabError) else []
    # A LabError's text lists its problems; the message is its first line, the list is `problems`.
    message = str(error).splitlines()[0].rstrip(":") if problems else str(error)
    return {
        "error": {
            "code": error.exit_code,
            "message": message,
            "problems": [problem_json(p) for p in problems],
        }
    }


def problem_json(p: Problem) -> dict[str, Any]:
    """A lab file's problem (or warning) as every document gives it."""
    return {"file": p.file, "line": p.line, "key": p.path, "message": p.message}


def schema(command: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of `command`'s --json output, as shipped."""
    text = resources.files("netlab").joinpath("schemas", f"{command}.{VERSION}.json").read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]
