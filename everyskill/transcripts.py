"""Claude Code session transcripts: the API responses they record, and the skill each ran under.

A Claude Code transcript is a JSONL file: one JSON object per line, each
with a ``type``. An ``assistant`` line carries the Anthropic Messages
API response it comes from in ``message`` (``id``, ``model``, ``usage``
with ``input_tokens``, ``output_tokens``, ``cache_creation_input_tokens``,
``cache_read_input_tokens``) and the line's ``sessionId``. One response
is written as several lines, one per content block, each repeating the
response's ``id``, input and cache counts; ``output_tokens`` starts as a
placeholder and only a later line of the response, when one is written,
holds the final count. Subagents write their own transcripts
(``<session>/subagents/agent-<id>.jsonl`` since Claude Code 2.1.2,
``agent-<id>.jsonl`` beside the session's file before, ``isSidechain``
lines in the session's file earlier still), and the last response of a
subagent keeps its placeholder there: its final usage is only in the
parent's ``Task`` tool result (``toolUseResult.usage``).
``tests/claude_code/README.md`` lists the public sources of these facts.

Contract
--------
- :func:`read_responses` reads a transcript from byte ``start`` (the
  ``end`` of a previous reading, to read only what was added since) and
  returns a :class:`Reading`: one :class:`Response` per ``message.id``,
  in the order of their first lines.

  - Only complete lines are read: a last line without its newline (the
    file is being written, or was cut off) is left for the next reading.
    A complete line that is not a JSON object is skipped and counted in
    ``skipped``; no number is taken from a broken line.
  - Only ``assistant`` lines with a ``message.id`` and a ``usage`` are
    responses (``progress`` lines that embed a subagent's messages are
    not); those of the model ``<synthetic>`` (notices Claude Code writes
    itself, no API call behind them) are not either.
  - The lines of one response are merged: each count is the largest its
    lines report (input and cache counts are the same on every line;
    the output count grows from its placeholder to the final one).
    Cache writes are ``cache_creation_input_tokens``, or the sum of the
    ``cache_creation`` breakdown (5-minute and 1-hour writes) when that
    field is 0 and the breakdown is not (Claude Code wrote 0 there before
    2.1.152).
  - Unless ``final``, the last response of the reading is *held back*:
    the file may be written after the hook runs (Claude Code writes it
    asynchronously), so that response may still lack its final output
    count. ``end`` is then the offset of its first line, and the next
    reading starts there and reads it whole. A ``final`` reading (the
    session has ended) holds nothing back; ``end`` is after the last
    complete line.
  - ``last_usage`` is the parent's report of this subagent's last usage
    (:attr:`Reading.agent_usage` of the parent's transcript): when it is
    given and the reading's last response has its input and cache-read
    counts, that response takes its output count and is not held back
    (the subagent has ended).
  - :attr:`Reading.agent_usage` maps each subagent id whose ``Task``
    result the reading saw to the usage that result reports, and
    :attr:`Reading.agent_skill` to the skill running when the subagent
    was launched (its responses did that skill's work).
  - ``limit`` bounds the bytes read: a reading that stops there is not
    ``final`` (its last response is held back), and the next reading goes
    on from ``end``; a single line longer than ``limit`` is skipped
    (counted in ``skipped``). :attr:`Reading.held` is the response held back.
- The skill a response ran under (``Response.skill``, a skill *name* as
  Claude Code knows it, or None): a skill starts when the model calls the
  ``Skill`` tool (``tool_use`` named ``Skill``, the name in its input's
  ``skill``, or ``command`` in earlier versions) or when the user's
  prompt runs it as a slash command (``<command-name>/name</command-name>``
  in the prompt; built-in commands look the same, and the catalogue tells
  them apart). The responses after that, up to the user's next prompt,
  ran under it; the response that called the tool did not. A ``user``
  line that is a tool result, an ``isMeta`` line (such as the skill's
  body Claude Code adds) or an ``isCompactSummary`` line is not a prompt.
  ``Reading.skill`` is the skill running at ``end``: pass it as ``skill``
  to the next reading.
- Nothing here knows about the catalogue or the API.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

__all__ = ["Reading", "Response", "read_responses", "session_of"]

_SYNTHETIC = "<synthetic>"
_SKILL_TOOL = "Skill"
_COMMAND = re.compile(r"<command-name>\s*/?([^<\s]+)\s*</command-name>")


@dataclasses.dataclass
class Response:
    """One API response of the transcript, its lines merged."""

    message_id: str
    model: str
    session_id: str | None
    request_id: str | None
    timestamp: str | None
    skill: str | None
    sidechain: bool
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    lines: int = 0
    # Where its first line starts, and the skill running before it.
    offset: int = dataclasses.field(default=0, repr=False)
    skill_before: str | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass
class Reading:
    """What :func:`read_responses` found; see the module's contract."""

    responses: list[Response]
    end: int
    skill: str | None
    skipped: int = 0
    agent_usage: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    agent_skill: dict[str, str | None] = dataclasses.field(default_factory=dict)
    held: Response | None = None


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _cache_writes(usage: dict[str, Any]) -> int:
    written = _count(usage, "cache_creation_input_tokens")
    breakdown = usage.get("cache_creation")
    if written == 0 and isinstance(breakdown, dict):
        written = _count(breakdown, "ephemeral_5m_input_tokens") + _count(
            breakdown, "ephemeral_1h_input_tokens"
        )
    return written


def _content_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [block for block in content if isinstance(block, dict)] if isinstance(content, list) else []


def _skill_called(message: dict[str, Any]) -> str | None:
    """The skill a response's ``Skill`` tool call starts, if it has one."""
    for block in _content_blocks(message):
        if block.get("type") == "tool_use" and block.get("name") == _SKILL_TOOL:
            given = block.get("input")
            if isinstance(given, dict):
                name = given.get("skill", given.get("command"))
                if isinstance(name, str) and name.strip():
                    return name.strip().lstrip("/")
    return None


def _prompt_text(line: dict[str, Any]) -> str | None:
    """The text of a user's prompt, or None for tool results and lines Claude Code adds."""
    if line.get("isMeta") or line.get("isCompactSummary") or line.get("toolUseResult") is not None:
        return None
    message = line.get("message")
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return content
    blocks = _content_blocks(message)
    if not blocks or any(block.get("type") == "tool_result" for block in blocks):
        return None
    return "\n".join(str(block.get("text", "")) for block in blocks if block.get("type") == "text")


def _agent_usage(line: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A ``Task`` result's subagent id and the usage it reports."""
    result = line.get("toolUseResult")
    if isinstance(result, dict):
        agent, usage = result.get("agentId"), result.get("usage")
        if isinstance(agent, str) and agent and isinstance(usage, dict):
            return agent, usage
    return None


def session_of(path: str | Path) -> str | None:
    """The ``sessionId`` of a transcript's first line that has one (None if none)."""
    with open(path, "rb") as file:
        for raw in file:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and isinstance(line.get("sessionId"), str):
                return str(line["sessionId"])
    return None


def _after_line(path: str | Path, offset: int) -> int:
    """The offset after the newline that ends the line going on at ``offset``."""
    with open(path, "rb") as file:
        file.seek(offset)
        while chunk := file.read(1 << 20):
            newline = chunk.find(b"\n")
            if newline >= 0:
                return offset + newline + 1
            offset += len(chunk)
    return offset


def read_responses(
    path: str | Path,
    *,
    start: int = 0,
    skill: str | None = None,
    final: bool = False,
    last_usage: dict[str, Any] | None = None,
    limit: int | None = None,
) -> Reading:
    """The responses of the transcript at ``path`` from byte ``start``; see the contract."""
    with open(path, "rb") as file:
        file.seek(start)
        data = file.read(-1 if limit is None else limit + 1)
    if limit is not None and len(data) > limit:
        data = data[:limit]
        final = False  # the file goes on: its last response here may too
    complete = data.rfind(b"\n") + 1
    if complete == 0 and limit is not None and len(data) == limit:
        # One line longer than the limit (a tool's huge output): skip it.
        return Reading([], _after_line(path, start + limit), skill, skipped=1)
    responses: dict[str, Response] = {}
    agent_usage: dict[str, dict[str, Any]] = {}
    agent_skill: dict[str, str | None] = {}
    skipped = 0
    offset = start
    for raw in data[:complete].splitlines(keepends=True):
        line_offset, offset = offset, offset + len(raw)
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            skipped += 1
            continue
        if not isinstance(line, dict):
            skipped += 1
            continue
        kind = line.get("type")
        if kind == "user":
            reported = _agent_usage(line)
            if reported is not None:
                agent_usage[reported[0]] = reported[1]
                agent_skill[reported[0]] = skill
            prompt = _prompt_text(line)
            if prompt is not None:
                command = _COMMAND.search(prompt)
                skill = command.group(1) if command else None
            continue
        if kind != "assistant":
            continue
        message = line.get("message")
        if not isinstance(message, dict):
            continue
        message_id, model, usage = message.get("id"), message.get("model"), message.get("usage")
        if not isinstance(message_id, str) or not message_id or not isinstance(usage, dict):
            continue
        if not isinstance(model, str) or not model or model == _SYNTHETIC:
            continue
        response = responses.get(message_id)
        if response is None:
            session = line.get("sessionId")
            request = line.get("requestId")
            timestamp = line.get("timestamp")
            response = responses[message_id] = Response(
                message_id=message_id,
                model=model,
                session_id=session if isinstance(session, str) else None,
                request_id=request if isinstance(request, str) else None,
                timestamp=timestamp if isinstance(timestamp, str) else None,
                skill=skill,
                sidechain=bool(line.get("isSidechain")),
                offset=line_offset,
                skill_before=skill,
            )
        response.lines += 1
        response.input_tokens = max(response.input_tokens, _count(usage, "input_tokens"))
        response.output_tokens = max(response.output_tokens, _count(usage, "output_tokens"))
        response.cache_read_tokens = max(
            response.cache_read_tokens, _count(usage, "cache_read_input_tokens")
        )
        response.cache_write_tokens = max(response.cache_write_tokens, _cache_writes(usage))
        called = _skill_called(message)
        if called is not None:
            skill = called
    found = list(responses.values())
    end = start + complete
    if found and last_usage is not None:
        last = found[-1]
        if (last.input_tokens, last.cache_read_tokens) == (
            _count(last_usage, "input_tokens"),
            _count(last_usage, "cache_read_input_tokens"),
        ):
            last.output_tokens = max(last.output_tokens, _count(last_usage, "output_tokens"))
            final = True
    held = None
    if found and not final:
        held = found.pop()
        end, skill = held.offset, held.skill_before
    return Reading(found, end, skill, skipped, agent_usage, agent_skill, held)
