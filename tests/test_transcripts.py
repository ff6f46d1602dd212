"""
Reading Claude Code transcripts against hand counts: real transcripts
published by other projects and hand-written ones for the hard cases
(tests/claude_code/README.md says where each comes from). Per response:
its model, input, output, cache-read and cache-write tokens, and the
skill it ran under; each response once, however many lines it has.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from everyskill import hook, transcripts

FIXTURES = Path(__file__).parent / "claude_code"

SINGLE_FILES = [
    "real/sniffly_v1_0_17_session_with_summary",
    "real/spotter_final_usage_on_later_line",
    "real/spotter_one_response_five_lines_1h_cache",
    "real/spotter_skill_tool_excerpt",
    "real/spotter_slash_command_skill_excerpt",
    "synthetic/cache_5m_1h",
    "synthetic/skill_tool_invocation",
    "synthetic/slash_command_skill",
    "synthetic/split_three_lines",
    "synthetic/synthetic_model_lines",
    "synthetic/truncated_last_line",
    "synthetic/unknown_models",
]


def expected(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    return data


def counts(response: transcripts.Response) -> dict[str, Any]:
    return {
        "model": response.model,
        "input_tokens": response.input_tokens,
        "output_tokens": response.output_tokens,
        "cache_read_input_tokens": response.cache_read_tokens,
        "cache_creation_input_tokens": response.cache_write_tokens,
    }


def hand_counts(responses: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    keys = ("model", "input_tokens", "output_tokens", "cache_read_input_tokens",
            "cache_creation_input_tokens")
    return {message: {k: given[k] for k in keys} for message, given in responses.items()}


@pytest.mark.parametrize("name", SINGLE_FILES)
def test_each_response_once_with_the_hand_counts(name: str) -> None:
    reading = transcripts.read_responses(FIXTURES / f"{name}.jsonl", final=True)
    want = expected(name)
    assert {r.message_id: counts(r) for r in reading.responses} == hand_counts(want["responses"])
    skills = {m: r["skill"] for m, r in want["responses"].items() if "skill" in r}
    assert {r.message_id: r.skill for r in reading.responses if r.message_id in skills} == skills


def test_the_skill_a_response_ran_under_is_read_with_the_model_call_excluded() -> None:
    reading = transcripts.read_responses(FIXTURES / "synthetic/skill_tool_invocation.jsonl", final=True)
    totals = expected("synthetic/skill_tool_invocation")["totals_for_skill_release_notes"]
    under = [r for r in reading.responses if r.skill == "release-notes"]
    assert len(under) == totals["responses"]
    assert sum(r.output_tokens for r in under) == totals["output_tokens"]
    assert reading.responses[0].skill is None  # the response that called the Skill tool


def test_a_line_being_written_is_left_for_the_next_reading(tmp_path: Path) -> None:
    source = FIXTURES / "synthetic/truncated_last_line.jsonl"
    reading = transcripts.read_responses(source, final=True)
    data = source.read_bytes()
    assert not data.endswith(b"\n")
    assert reading.end == data.rfind(b"\n") + 1
    assert reading.skipped == 1  # the line cut in the middle of the file
    # The line is finished: the next reading has it, and nothing before it again.
    growing = tmp_path / "session.jsonl"
    growing.write_bytes(data)
    last = next(
        line for line in map(json.loads, data.splitlines()[:2]) if line["type"] == "assistant"
    )
    last["message"]["id"] = "msg_01FINISHEDLATER"
    finished = data[: reading.end] + json.dumps(last).encode() + b"\n"
    growing.write_bytes(finished)
    more = transcripts.read_responses(growing, start=reading.end, final=True)
    assert [r.message_id for r in more.responses] == ["msg_01FINISHEDLATER"]
    assert more.end == len(finished)


@pytest.mark.parametrize("limit", [300, 2_000, 10_000])
def test_a_transcript_read_in_pieces_gives_each_response_once(limit: int) -> None:
    source = FIXTURES / "real/spotter_final_usage_on_later_line.jsonl"
    whole = transcripts.read_responses(source, final=True)
    found: list[transcripts.Response] = []
    start, skill, readings = 0, None, 0
    while start < source.stat().st_size and readings < 10_000:
        reading = transcripts.read_responses(source, start=start, skill=skill, limit=limit)
        found += reading.responses
        start, skill, readings = reading.end, reading.skill, readings + 1
        if reading.held is None and not reading.responses and reading.skipped == 0:
            break
    found += transcripts.read_responses(source, start=start, skill=skill, final=True).responses
    assert [counts(r) for r in found] == [counts(r) for r in whole.responses]


def test_lines_without_a_type_are_not_responses() -> None:
    reading = transcripts.read_responses(FIXTURES / "real/ccusage_fixture_minimal_lines.jsonl", final=True)
    assert expected("real/ccusage_fixture_minimal_lines")["responses_if_type_assistant_is_required"] in (0, {}, [])
    assert reading.responses == []


def test_a_stop_holds_back_the_last_response_until_it_is_complete(tmp_path: Path) -> None:
    want = expected("synthetic/stop_mid_and_end")
    mid = FIXTURES / "synthetic/stop_mid_session.jsonl"
    end = FIXTURES / "synthetic/stop_end_of_session.jsonl"
    first = transcripts.read_responses(mid)
    complete = {m: r for m, r in want["at_first_stop"]["responses"].items() if not r.get("incomplete")}
    assert {r.message_id: counts(r) for r in first.responses} == hand_counts(complete)
    # The session's file grows: the held-back response is read whole the next time.
    growing = tmp_path / "session.jsonl"
    shutil.copyfile(end, growing)
    second = transcripts.read_responses(growing, start=first.end, skill=first.skill, final=True)
    everything = hand_counts(want["at_session_end"]["responses"])
    assert {r.message_id: counts(r) for r in [*first.responses, *second.responses]} == everything


def test_a_subagents_last_output_comes_from_the_parents_task_result(tmp_path: Path) -> None:
    want = expected("synthetic/subagents_nested_dir")
    directory = FIXTURES / "synthetic/subagents_nested_dir"
    event = {
        "session_id": want["session_id"],
        "transcript_path": str(directory / f"{want['session_id']}.jsonl"),
    }
    files = hook._transcripts_of(event)
    responses, _offsets = hook._responses(files, tmp_path, final=False)
    found = {r.message_id: counts(r) for r in responses}
    # A Stop: each file's last response is held back unless it is known to be
    # complete; the subagent's is (its parent reported its final usage).
    assert found["msg_01NSTSUB02AAAAAAAAAAAAAA"]["output_tokens"] == 410
    everything, _ = hook._responses(files, tmp_path / "fresh", final=True)
    assert {r.message_id: counts(r) for r in everything} == hand_counts(want["responses"])


@pytest.mark.parametrize(
    "layout",
    ["subagents_inline_sidechain", "subagents_sibling_files", "real/spotter_subagents_layout"],
)
def test_every_layout_of_subagent_transcripts(tmp_path: Path, layout: str) -> None:
    name = layout if "/" in layout else f"synthetic/{layout}"
    want = expected(name)
    directory = FIXTURES / name
    mains = [Path(r["file"]) for r in want["responses"].values() if "file" in r and r.get("agent_id") is None]
    main = mains[0] if mains else Path(want["fixture"]).relative_to(Path(name).name)
    session = want.get("session_id") or transcripts.session_of(directory / main)
    event = {"session_id": session, "transcript_path": str(directory / main)}
    responses, _ = hook._responses(hook._transcripts_of(event), tmp_path, final=True)
    assert {r.message_id: counts(r) for r in responses} == hand_counts(want["responses"])


def test_cache_writes_fall_back_to_the_breakdown() -> None:
    reading = transcripts.read_responses(FIXTURES / "synthetic/cache_5m_1h.jsonl", final=True)
    assert sum(r.cache_write_tokens for r in reading.responses) == expected(
        "synthetic/cache_5m_1h"
    )["totals"]["cache_creation_input_tokens"]
