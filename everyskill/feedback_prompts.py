"""When to ask a user for feedback on a skill: its first 3 uses, then every 10th.

Contract
--------
- :class:`UseCounter` counts the uses of each skill per user in one JSON
  file (``0600``), under a lock (``filelock``): two hooks counting at the
  same moment both count. :meth:`UseCounter.count_use` adds one use and
  returns the new count.
- :func:`should_ask` says whether use number ``n`` (from 1) asks: uses 1,
  2 and 3, then 10, 20, 30... (:data:`FIRST_USES`, :data:`EVERY`).
- :func:`prompt_output` is the ``PostToolUse`` hook output that asks:
  ``hookSpecificOutput.additionalContext`` tells the model to ask the
  user, once the skill's task is done, for a thumbs up or down and what
  to improve, and to record the answer with the MCP tool
  ``submit_feedback`` (or to drop it if the user declines); ``systemMessage``
  tells the user why they are asked.
- A count file that cannot be read as counts (edited by hand, cut off)
  starts again from zero rather than failing the hook.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import filelock

__all__ = ["EVERY", "FIRST_USES", "UseCounter", "prompt_output", "should_ask"]

#: Every one of the first uses asks.
FIRST_USES = 3
#: After them, every this-many-th use asks.
EVERY = 10


def should_ask(use: int) -> bool:
    """Whether use number ``use`` (from 1) of a skill asks for feedback."""
    return 1 <= use <= FIRST_USES or (use > FIRST_USES and use % EVERY == 0)


class UseCounter:
    """Uses per user and skill, kept in ``path``; see the module's contract."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = filelock.FileLock(str(self.path) + ".lock", mode=0o600)

    def _read(self) -> dict[str, dict[str, int]]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            user: {s: n for s, n in skills.items() if isinstance(n, int)}
            for user, skills in data.items()
            if isinstance(skills, dict)
        }

    def count_use(self, user: str, skill: str, *, lock_wait: float = 0.5) -> int:
        """Add one use of ``skill`` by ``user``; the count after it."""
        with self._lock.acquire(timeout=lock_wait):
            counts = self._read()
            use = counts.setdefault(user, {}).get(skill, 0) + 1
            counts[user][skill] = use
            temporary = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(counts, file)
            os.replace(temporary, self.path)
            return use

    def uses(self, user: str, skill: str) -> int:
        """The uses counted so far."""
        return self._read().get(user, {}).get(skill, 0)


def prompt_output(skill: str, use: int) -> dict[str, Any]:
    """The PostToolUse output asking for feedback on use ``use`` of ``skill``."""
    ordinal = {1: "first", 2: "second", 3: "third"}.get(use, f"{use}th")
    return {
        "hookSpecificOutput": {
            "hookEventName": "PostToolUse",
            "additionalContext": (
                f"This was the {ordinal} use of the EverySkill skill {skill!r}. When the task"
                " it was used for is done, ask the user in one short question how the skill"
                " did: thumbs up or thumbs down, and anything it should do better. Record the"
                " answer with the MCP tool submit_feedback (skill"
                f" {skill!r}; feedback_type thumbs_up or thumbs_down, the user's words as the"
                " comment; a concrete change they propose as a suggestion). If the user"
                " declines or does not answer, record nothing and do not ask again."
            ),
        },
        "systemMessage": (
            f"EverySkill asks for feedback on {skill!r} on its first {FIRST_USES} uses"
            f" and every {EVERY}th after."
        ),
    }
