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
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from everyskill.api_keys import create_api_key
from everyskill import hook
from everyskill.hook import measurement_id
from everyskill.spool import Spool
from everyskill.transcripts import session_of
from tests.http_support import Served, Tenant, forwarding
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
        # A loaded test machine must not make a run give up on a working API;
        # the default deadline is run by the tests of the deadline itself.
        "EVERYSKILL_HOOK_DEADLINE": "30",
    }


def spool_of(env: dict[str, str]) -> Spool:
    """The spool of the hook's configuration in ``env``."""
    return Spool.for_client(
        env["EVERYSKILL_STATE_DIR"], env["EVERYSKILL_API_URL"], env["EVERYSKILL_API_KEY"]
    )


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


def copy_transcript(source: Path, target: Path, tmp_path: Path) -> None:
    """Copy a transcript, each session id its lines name made this test's own.

    Measurement ids come from the session and the response: the same
    fixture stored by the tenants of two tests would be the same ids, and
    the second tenant's refused (the first holds them).
    """
    text = source.read_text()
    for old in set(re.findall(r'"sessionId":\s*"([^"]+)"', text)):
        text = text.replace(old, str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tmp_path}/{old}")))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def session_copy(tmp_path: Path, fixture: str, session: str | None = None) -> tuple[Path, str]:
    """A copy of a fixture transcript where Claude Code keeps one."""
    session = session or str(uuid.uuid4())
    target = tmp_path / "projects" / f"{session}.jsonl"
    copy_transcript(FIXTURES / fixture, target, tmp_path)
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
    copy_transcript(FIXTURES / "synthetic/stop_end_of_session.jsonl", transcript, tmp_path)
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
    spool = Spool.for_client(
        hook_env["EVERYSKILL_STATE_DIR"], down["EVERYSKILL_API_URL"], hook_env["EVERYSKILL_API_KEY"]
    ).directory
    waiting = list(spool.glob("*.spool.jsonl"))
    assert waiting and all(f.stat().st_mode & 0o777 == 0o600 for f in waiting)
    assert "kept in the spool" in (Path(hook_env["EVERYSKILL_STATE_DIR"]) / "hook.log").read_text()
    # The API comes back (at the address the measurements were kept for).
    # The MCP server's feedback waiting in the same spool is not the hook's to send.
    Spool(spool).add("/feedback", [{"id": str(uuid.uuid4()), "skill_slug": SKILL,
                                    "feedback_type": "thumbs_up"}])
    other, other_session = session_copy(tmp_path, "synthetic/cache_5m_1h.jsonl")
    with forwarding(down["EVERYSKILL_API_URL"], hook_env["EVERYSKILL_API_URL"]):
        run_hook(down, event("SessionEnd", other, other_session))
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
    refused = (spool_of(hook_env).directory / "refused.jsonl").read_text()
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
    assert spool_of(env).pending() > 0


def nested_session(tmp_path: Path, main_lines: int | None = None) -> tuple[Path, str]:
    """A copy of the nested-subagents session; its own file cut to ``main_lines``."""
    want = expected("synthetic/subagents_nested_dir")
    session = want["session_id"]
    source = FIXTURES / "synthetic/subagents_nested_dir"
    target = tmp_path / "projects"
    for file in source.rglob("*.jsonl"):
        copy_transcript(file, target / file.relative_to(source), tmp_path)
    transcript = target / f"{session}.jsonl"
    if main_lines is not None:
        lines = transcript.read_text().splitlines(keepends=True)
        transcript.write_text("".join(lines[:main_lines]))
    return transcript, session


async def test_subagent_stop_then_session_end_through_the_process(
    tmp_path: Path, hook_env: dict[str, str], api_a: Tenant, owner: asyncpg.Connection
) -> None:
    want = expected("synthetic/subagents_nested_dir")
    transcript, session = nested_session(tmp_path)
    given = json.loads((FIXTURES / "hook_inputs/synthetic_subagent_stop_nested.json").read_text())
    given["transcript_path"] = str(transcript)
    given["agent_transcript_path"] = str(
        transcript.parent / session / "subagents" / f"agent-{given['agent_id']}.jsonl"
    )
    run_hook(hook_env, given)
    run_hook(hook_env, event("Stop", transcript, session))
    run_hook(hook_env, event("SessionEnd", transcript, session))
    assert as_counts(await stored(owner, api_a)) == hand_counts(want["responses"])


async def test_a_side_question_never_wins_over_the_parents_held_back_response(
    tmp_path: Path, hook_env: dict[str, str], api_a: Tenant, owner: asyncpg.Connection
) -> None:
    want = expected("synthetic/subagents_nested_dir")
    # The session's file as far as its line 8: the response the side question
    # replays is its last one, held back by the Stop.
    transcript, session = nested_session(tmp_path, main_lines=8)
    run_hook(hook_env, event("Stop", transcript, session))
    copy_transcript(FIXTURES / f"synthetic/subagents_nested_dir/{session}.jsonl", transcript, tmp_path)
    run_hook(hook_env, event("SessionEnd", transcript, session))
    assert as_counts(await stored(owner, api_a)) == hand_counts(want["responses"])


async def test_an_api_that_never_answers_costs_the_deadline_and_nothing_is_lost(
    tmp_path: Path, hook_env: dict[str, str], api_a: Tenant, owner: asyncpg.Connection
) -> None:
    import socket

    transcript, session = session_copy(tmp_path, "synthetic/split_three_lines.jsonl")
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        hanging = {**hook_env, "EVERYSKILL_API_URL": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        del hanging["EVERYSKILL_HOOK_DEADLINE"]  # the default, 0.4 s
        run_hook(hanging, event("SessionEnd", transcript, session))
        assert "stay in the spool" in (Path(hook_env["EVERYSKILL_STATE_DIR"]) / "hook.log").read_text()
        assert spool_of(hanging).pending() == 2
        silent.close()
        with forwarding(hanging["EVERYSKILL_API_URL"], hook_env["EVERYSKILL_API_URL"]):
            run_hook({**hanging, "EVERYSKILL_HOOK_DEADLINE": "30"}, event("Stop", transcript, session))
    assert as_counts(await stored(owner, api_a)) == hand_counts(
        expected("synthetic/split_three_lines")["responses"]
    )


async def test_429_keeps_the_measurements_for_a_later_run(
    tmp_path: Path, hook_env: dict[str, str], api_a: Tenant, owner: asyncpg.Connection
) -> None:
    limited = await create_api_key(api_a.rows.tenant_id, "hook", "measurements:write",
                                   rate_limit_per_minute=1)
    env = {**hook_env, "EVERYSKILL_API_KEY": limited.key}
    first, first_session = session_copy(tmp_path, "synthetic/split_three_lines.jsonl")
    run_hook(env, event("SessionEnd", first, first_session))
    assert len(await stored(owner, api_a)) == 2
    second, second_session = session_copy(tmp_path, "synthetic/cache_5m_1h.jsonl")
    run_hook(env, event("SessionEnd", second, second_session))
    assert len(await stored(owner, api_a)) == 2
    assert spool_of(env).pending() == len(expected("synthetic/cache_5m_1h")["responses"])
    assert "429" in (Path(env["EVERYSKILL_STATE_DIR"]) / "hook.log").read_text()


async def test_a_configured_user_of_another_tenant_is_dropped_not_the_usage(
    tmp_path: Path, hook_env: dict[str, str], api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    env = {**hook_env, "EVERYSKILL_USER_ID": api_b.rows.user_id}
    transcript, session = session_copy(tmp_path, "synthetic/split_three_lines.jsonl")
    run_hook(env, event("SessionEnd", transcript, session))
    rows = await stored(owner, api_a)
    assert len(rows) == 2 and {row["user_id"] for row in rows.values()} == {None}
    assert "is not a user of the key's tenant" in (Path(env["EVERYSKILL_STATE_DIR"]) / "hook.log").read_text()


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (FIXTURES / "hook_inputs").glob("*.json"))
)
def test_every_published_and_written_hook_input_exits_0(tmp_path: Path, name: str) -> None:
    env = {
        "EVERYSKILL_API_URL": f"http://127.0.0.1:{free_port()}",
        "EVERYSKILL_API_KEY": "esk_unused",
        "EVERYSKILL_CONFIG": str(tmp_path / "no-config.toml"),
        "EVERYSKILL_STATE_DIR": str(tmp_path / "state"),
    }
    given = json.loads((FIXTURES / "hook_inputs" / name).read_text())
    done = run_hook(env, given)
    # Their transcripts are not on this machine: nothing to read, nothing kept.
    assert spool_of(env).pending() == 0
    if done.stdout:
        output = json.loads(done.stdout)
        assert given["hook_event_name"] == "PostToolUse" and given["tool_name"] == "Skill"
        assert output["hookSpecificOutput"]["hookEventName"] == "PostToolUse"
    elif given["hook_event_name"] == "PostToolUse" and given.get("tool_name") == "Skill":
        # Only a plugin's skill (plugin:name) is not asked about.
        assert ":" in given["tool_input"]["skill"]


def test_the_hook_imports_no_database_layer() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, everyskill.hook; print(' '.join(sys.modules))"],
        capture_output=True, text=True, cwd="/", check=True,
    )
    loaded = set(done.stdout.split())
    assert not loaded & {"asyncpg", "pydantic", "piccolo", "everyskill.rows", "everyskill.tenancy"}


def test_broken_configurations_and_paths_never_fail_the_session(tmp_path: Path) -> None:
    broken = tmp_path / "config.toml"
    broken.write_bytes(b'api_url = "http://x:1"\napi_key = "\xff"\n')
    broken.chmod(0o600)
    done = run_hook({"EVERYSKILL_CONFIG": str(broken)}, {"hook_event_name": "Stop"})
    assert "not UTF-8" in done.stderr
    broken.write_text('api_url = "http://x:1"\napi_key = "esk_x"\nstate_dir = 5\n')
    assert "state_dir" in run_hook({"EVERYSKILL_CONFIG": str(broken)}, {}).stderr
    # A session id that is a path is not followed.
    transcript, _ = session_copy(tmp_path, "synthetic/split_three_lines.jsonl")
    (tmp_path / "elsewhere" / "subagents").mkdir(parents=True)
    shutil.copyfile(FIXTURES / "synthetic/cache_5m_1h.jsonl", tmp_path / "elsewhere/subagents/agent-x.jsonl")
    files = hook._transcripts_of({"transcript_path": str(transcript), "session_id": "../elsewhere"})
    assert files == [transcript]


def test_a_skill_outside_the_catalogue_is_asked_about_again_a_day_later(tmp_path: Path) -> None:
    env = {
        "EVERYSKILL_API_URL": "http://127.0.0.1:9",
        "EVERYSKILL_API_KEY": "esk_unused",
        "EVERYSKILL_CONFIG": str(tmp_path / "no-config.toml"),
        "EVERYSKILL_STATE_DIR": str(tmp_path / "state"),
    }
    post_tool_use = json.loads((FIXTURES / "hook_inputs/synthetic_post_tool_use_skill.json").read_text())
    state = tmp_path / "state"
    state.mkdir()
    now = time.time()
    (state / "not-catalogue.json").write_text(json.dumps({"slugs": {SKILL: now - 60}}))
    assert run_hook(env, post_tool_use).stdout == ""
    (state / "not-catalogue.json").write_text(
        json.dumps({"slugs": {SKILL: now - hook.NOT_CATALOGUE_FOR - 60}})
    )
    assert json.loads(run_hook(env, post_tool_use).stdout)["hookSpecificOutput"]
