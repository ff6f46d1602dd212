"""
``everyskill-hook`` run as Claude Code runs it (a process, the hook's JSON
on stdin) against the served API and a key scoped to measurements only:
the stored measurements equal the hand counts of the transcripts in
tests/claude_code/; a second run, a lost state, a Stop in the middle of a
session and a resumed session store nothing twice; with the API down the
measurements wait in the spool and the next run sends them; the feedback
prompt's cadence; exit 0 whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from everyskill.api_keys import create_api_key
from everyskill.hook import measurement_id
from everyskill.spool import Spool
from everyskill.transcripts import session_of
from tests.http_support import Served, Tenant
from tests.support import PROJECT_ROOT, free_port
from tests.test_transcripts import FIXTURES, expected, hand_counts

SKILL = "release-notes"
DEFAULT = "general-use"


@pytest.fixture
async def hook_env(tmp_path: Path, api: Served, api_a: Tenant) -> dict[str, str]:
    """The hook's environment: the API, a measurements-only key, a default skill."""
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        for slug in (SKILL, DEFAULT):
            answer = client.post("/v1/skills", json={"slug": f"{slug}", "name": slug})
            assert answer.status_code == 201, answer.text
    key = await create_api_key(api_a.rows.tenant_id, "hook", "measurements:write")
    return {
        "EVERYSKILL_API_URL": api.base,
        "EVERYSKILL_API_KEY": key.key,
        "EVERYSKILL_CONFIG": str(tmp_path / "no-config.toml"),
        "EVERYSKILL_STATE_DIR": str(tmp_path / "state"),
        "EVERYSKILL_DEFAULT_SKILL": DEFAULT,
        "EVERYSKILL_USER_ID": api_a.rows.user_id,
    }


def run_hook(env: dict[str, str], event: dict[str, Any] | str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "everyskill.hook"],
        input=event if isinstance(event, str) else json.dumps(event),
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


def session_copy(tmp_path: Path, fixture: str, session: str | None = None) -> tuple[Path, str]:
    """A copy of a fixture transcript where Claude Code keeps one."""
    source = FIXTURES / fixture
    session = session or str(uuid.uuid4())
    target = tmp_path / "projects" / f"{session}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target, session


def event(name: str, transcript: Path, session: str) -> dict[str, Any]:
    return {
        "hook_event_name": name,
        "session_id": session,
        "transcript_path": str(transcript),
        "cwd": str(transcript.parent),
    }


async def stored(owner: asyncpg.Connection, tenant: Tenant) -> dict[str, dict[str, Any]]:
    rows = await owner.fetch(
        """
        SELECT m.*, s.slug FROM token_measurements m JOIN skills s ON s.id = m.skill_id
        WHERE m.tenant_id = $1 AND m.source = 'hook' AND m.usage_event_id IS NOT NULL
        """,
        tenant.rows.tenant_id,
    )
    return {row["usage_event_id"]: dict(row) for row in rows}


def as_counts(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        message: {
            "model": row["model_name"],
            "input_tokens": row["input_tokens"],
            "output_tokens": row["output_tokens"],
            "cache_read_input_tokens": row["cache_read_tokens"],
            "cache_creation_input_tokens": row["cache_write_tokens"],
        }
        for message, row in rows.items()
    }


async def test_a_session_is_stored_as_counted_by_hand_under_its_skills(
    tmp_path: Path, hook_env: dict[str, str], api_a: Tenant, owner: asyncpg.Connection
) -> None:
    want = expected("synthetic/skill_tool_invocation")
    transcript, session = session_copy(tmp_path, "synthetic/skill_tool_invocation.jsonl")
    run_hook(hook_env, event("Stop", transcript, session))
    run_hook(hook_env, event("SessionEnd", transcript, session))
    rows = await stored(owner, api_a)
    assert as_counts(rows) == hand_counts(want["responses"])
    for message, given in want["responses"].items():
        row = rows[message]
        assert row["slug"] == (SKILL if given["skill"] == SKILL else DEFAULT)
        # The id comes from the session the response's line names.
        assert row["id"] == measurement_id(str(session_of(transcript)), message)
        assert row["model_provider"] == "anthropic" and row["user_id"] == api_a.rows.user_id
        assert row["total_tokens"] == sum(
            given[k] for k in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                               "cache_creation_input_tokens")
        )
        assert row["estimated_cost_microcents"] is not None


async def test_running_again_or_losing_the_state_stores_nothing_new(
    tmp_path: Path, hook_env: dict[str, str], api_a: Tenant, owner: asyncpg.Connection
) -> None:
    transcript, session = session_copy(tmp_path, "real/spotter_final_usage_on_later_line.jsonl")
    run_hook(hook_env, event("SessionEnd", transcript, session))
    first = await stored(owner, api_a)
    assert as_counts(first) == hand_counts(expected("real/spotter_final_usage_on_later_line")["responses"])
    run_hook(hook_env, event("SessionEnd", transcript, session))
    shutil.rmtree(hook_env["EVERYSKILL_STATE_DIR"])
    run_hook(hook_env, event("Stop", transcript, session))
    run_hook(hook_env, event("SessionEnd", transcript, session))
    assert await stored(owner, api_a) == first


async def test_a_stop_mid_session_and_the_end_store_each_response_once(
    tmp_path: Path, hook_env: dict[str, str], api_a: Tenant, owner: asyncpg.Connection
) -> None:
    want = expected("synthetic/stop_mid_and_end")
    transcript, session = session_copy(tmp_path, "synthetic/stop_mid_session.jsonl")
    run_hook(hook_env, event("Stop", transcript, session))
    complete = {m: r for m, r in want["at_first_stop"]["responses"].items() if not r.get("incomplete")}
    assert as_counts(await stored(owner, api_a)) == hand_counts(complete)
    shutil.copyfile(FIXTURES / "synthetic/stop_end_of_session.jsonl", transcript)
    run_hook(hook_env, event("Stop", transcript, session))
    run_hook(hook_env, event("SessionEnd", transcript, session))
    assert as_counts(await stored(owner, api_a)) == hand_counts(want["at_session_end"]["responses"])


async def test_a_resumed_session_counts_the_copied_responses_once(
    tmp_path: Path, hook_env: dict[str, str], api_a: Tenant, owner: asyncpg.Connection
) -> None:
    want = expected("synthetic/resumed_session")
    for stop in want["stops"]:
        transcript, session = session_copy(
            tmp_path, f"synthetic/resumed_session/{stop['transcript']}", stop["hook_session_id"]
        )
        run_hook(hook_env, event("SessionEnd", transcript, session))
    rows = await stored(owner, api_a)
    assert as_counts(rows) == hand_counts(want["responses"])
    totals = want["totals_after_both_stops"]
    assert sum(r["output_tokens"] for r in rows.values()) == totals["output_tokens"]


async def test_with_the_api_down_the_next_run_sends_what_waited(
    tmp_path: Path, hook_env: dict[str, str], api_a: Tenant, owner: asyncpg.Connection
) -> None:
    transcript, session = session_copy(tmp_path, "synthetic/split_three_lines.jsonl")
    down = {**hook_env, "EVERYSKILL_API_URL": f"http://127.0.0.1:{free_port()}"}
    run_hook(down, event("SessionEnd", transcript, session))
    assert await stored(owner, api_a) == {}
    spool = Path(hook_env["EVERYSKILL_STATE_DIR"]) / "spool"
    waiting = list(spool.glob("*.spool.jsonl"))
    assert waiting and all(f.stat().st_mode & 0o777 == 0o600 for f in waiting)
    assert "kept in the spool" in (Path(hook_env["EVERYSKILL_STATE_DIR"]) / "hook.log").read_text()
    # The MCP server's feedback waiting in the same spool is not the hook's to send.
    Spool(spool).add("/feedback", [{"id": str(uuid.uuid4()), "skill_slug": SKILL,
                                    "feedback_type": "thumbs_up"}])
    # Another session's Stop with the API back sends what waited.
    other, other_session = session_copy(tmp_path, "synthetic/cache_5m_1h.jsonl")
    run_hook(hook_env, event("SessionEnd", other, other_session))
    assert Spool(spool).pending() == Spool(spool).pending(paths=("/feedback",)) == 1
    rows = await stored(owner, api_a)
    assert as_counts(rows) == hand_counts(
        {**expected("synthetic/split_three_lines")["responses"], **expected("synthetic/cache_5m_1h")["responses"]}
    )


async def test_a_skill_outside_the_catalogue_goes_to_the_default_or_is_skipped(
    tmp_path: Path, hook_env: dict[str, str], api_a: Tenant, owner: asyncpg.Connection
) -> None:
    want = expected("real/spotter_slash_command_skill_excerpt")
    transcript, session = session_copy(tmp_path, "real/spotter_slash_command_skill_excerpt.jsonl")
    skip = {**hook_env, "EVERYSKILL_UNATTRIBUTED": "skip"}
    run_hook(skip, event("SessionEnd", transcript, session))
    assert await stored(owner, api_a) == {}
    refused = (Path(hook_env["EVERYSKILL_STATE_DIR"]) / "spool" / "refused.jsonl").read_text()
    assert "skill_slug" in refused

    other, other_session = session_copy(tmp_path, "real/spotter_slash_command_skill_excerpt.jsonl")
    state = {**hook_env, "EVERYSKILL_STATE_DIR": str(tmp_path / "state2")}
    run_hook(state, event("SessionEnd", other, other_session))
    rows = await stored(owner, api_a)
    assert as_counts(rows) == hand_counts(want["responses"])
    assert {row["slug"] for row in rows.values()} == {DEFAULT}


async def test_unknown_models_are_stored_unpriced(
    tmp_path: Path, hook_env: dict[str, str], api_a: Tenant, owner: asyncpg.Connection
) -> None:
    transcript, session = session_copy(tmp_path, "synthetic/unknown_models.jsonl")
    run_hook(hook_env, event("SessionEnd", transcript, session))
    rows = await stored(owner, api_a)
    assert as_counts(rows) == hand_counts(expected("synthetic/unknown_models")["responses"])
    for row in rows.values():
        claude = "claude" in row["model_name"]
        assert row["model_provider"] == ("anthropic" if claude else "unknown")
        if not claude:
            assert row["estimated_cost_microcents"] is None


def test_the_feedback_prompt_asks_on_uses_1_2_3_then_every_10th(tmp_path: Path) -> None:
    env = {
        "EVERYSKILL_API_URL": "http://127.0.0.1:9",
        "EVERYSKILL_API_KEY": "esk_unused",
        "EVERYSKILL_CONFIG": str(tmp_path / "no-config.toml"),
        "EVERYSKILL_STATE_DIR": str(tmp_path / "state"),
        "EVERYSKILL_USER_ID": "user-1",
    }
    post_tool_use = json.loads((FIXTURES / "hook_inputs/synthetic_post_tool_use_skill.json").read_text())
    asked = []
    for use in range(1, 22):
        output = run_hook(env, post_tool_use).stdout
        if output.strip():
            answer = json.loads(output)
            specific = answer["hookSpecificOutput"]
            assert specific["hookEventName"] == "PostToolUse"
            assert SKILL in specific["additionalContext"] and "submit_feedback" in specific["additionalContext"]
            assert answer["systemMessage"]
            asked.append(use)
    assert asked == [1, 2, 3, 10, 20]
    # Per user: another user starts from the first use.
    other = run_hook({**env, "EVERYSKILL_USER_ID": "user-2"}, post_tool_use).stdout
    assert json.loads(other)["hookSpecificOutput"]["additionalContext"]
    # Another tool, or another event, asks nothing.
    assert run_hook(env, {**post_tool_use, "tool_name": "Bash"}).stdout == ""


def test_it_never_fails_the_session(tmp_path: Path) -> None:
    env = {"EVERYSKILL_CONFIG": str(tmp_path / "no-config.toml"), "EVERYSKILL_API_URL": "",
           "EVERYSKILL_API_KEY": ""}
    missing = run_hook(env, {"hook_event_name": "Stop"})
    assert missing.stdout == "" and "EVERYSKILL_API_URL" in missing.stderr
    configured = {
        "EVERYSKILL_API_URL": "http://127.0.0.1:9",
        "EVERYSKILL_API_KEY": "esk_unused",
        "EVERYSKILL_CONFIG": str(tmp_path / "no-config.toml"),
        "EVERYSKILL_STATE_DIR": str(tmp_path / "state"),
    }
    for given in ("not json", "[1, 2]", json.dumps({"hook_event_name": "Stop", "transcript_path": 3})):
        assert run_hook(configured, given).stdout == ""
    assert "everyskill-hook failed" in (tmp_path / "state" / "hook.log").read_text()


def settings_snippet(page: Path) -> dict[str, Any]:
    """The ``.claude/settings.json`` block of a page."""
    blocks = [b.split("```", 1)[0] for b in page.read_text().split("```json\n")[1:]]
    (block,) = [b for b in blocks if '"hooks"' in b]
    data: dict[str, Any] = json.loads(block)
    return data


@pytest.mark.parametrize("page", ["README.md", "docs/clients.md"])
def test_the_settings_snippet_runs_the_installed_command(tmp_path: Path, page: str) -> None:
    snippet = settings_snippet(PROJECT_ROOT / page)
    assert set(snippet["hooks"]) == {"Stop", "SessionEnd", "PostToolUse"}
    assert snippet["hooks"]["PostToolUse"][0]["matcher"] == "Skill"
    env = {
        **os.environ,
        "EVERYSKILL_API_URL": f"http://127.0.0.1:{free_port()}",
        "EVERYSKILL_API_KEY": "esk_unused",
        "EVERYSKILL_CONFIG": str(tmp_path / "no-config.toml"),
        "EVERYSKILL_STATE_DIR": str(tmp_path / "state"),
        "EVERYSKILL_DEFAULT_SKILL": DEFAULT,
    }
    transcript, session = session_copy(tmp_path, "synthetic/split_three_lines.jsonl")
    for name, entries in snippet["hooks"].items():
        (command,) = {hook["command"] for entry in entries for hook in entry["hooks"]}
        executable = shutil.which(command, path=str(Path(sys.executable).parent))
        assert executable, f"{command} is not a console script of the environment"
        given = event(name, transcript, session)
        if name == "PostToolUse":
            given |= {"tool_name": "Skill", "tool_input": {"skill": SKILL}}
        done = subprocess.run([executable], input=json.dumps(given), capture_output=True,
                              text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        if name == "PostToolUse":
            assert json.loads(done.stdout)["hookSpecificOutput"]["hookEventName"] == "PostToolUse"
    # The API is down: what the session ran is kept for the next run.
    assert list((tmp_path / "state" / "spool").glob("*.spool.jsonl"))
