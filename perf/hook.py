"""``python -m perf.hook``: how long ``everyskill-hook`` keeps Claude Code waiting.

The hook must finish within a second whatever happens. Each figure is the
wall time of the whole process, as Claude Code waits for it (interpreter
start, imports, reading the transcript, the spool, the API), the median
of ``--rounds`` runs, against the target of 1 second on the value:

- ``session_end``: a session's transcript of ``--responses`` responses
  (three lines each, as Claude Code writes them) read whole and stored
  through ``main.py``'s API. Each round is a new session, so every round
  stores its responses. Baseline, in the same rounds: a Python process
  doing the same work the plainest way (``json.loads`` of every line, one
  item per ``message.id``, one ``httpx`` POST of the batch to the same
  route, with ids) and nothing else: no state, no spool, no deadline, no
  skill attribution. The ratio is hook time / baseline time.
- ``stop_again``: the same session's Stop run again: nothing new to read
  from its offset, nothing to send.
- ``api_down``: the API refuses connections; the responses go to the
  spool.
- ``api_hanging``: the API accepts the connection and never answers: the
  hook's deadline (:data:`everyskill.hook.DEADLINE`) ends the wait.
- ``post_tool_use``: a feedback prompt's use counted.
- ``start``: ``python -c "import everyskill.hook"``, against the same with
  the database layer imported too (``everyskill.rows`` and
  ``everyskill.tenancy``, which the package imported with itself before
  its names were imported on first use): what that saves each run.
  Reported, no target.

``--scale quick`` makes 200 responses and 3 rounds, ``full`` (the default)
2,000 responses and 7 rounds. It runs on a scratch database of its own
(:func:`perf.alone.run_alone`).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from everyskill.api_keys import create_api_key
from everyskill.database import SERVER_SETTINGS, prepare_app_login
from perf.alone import run_alone
from perf.harness import Figure, Target
from perf.served import served_main

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WITHIN = Target("at_most", 1.0, on_value=True)
SCALES = {"quick": (200, 3), "full": (2000, 7)}

BASELINE = r"""
import json, sys, uuid, httpx
path, url, key, skill = sys.argv[1:5]
responses = {}
for line in open(path, "rb"):
    entry = json.loads(line)
    if entry.get("type") == "assistant":
        responses[entry["message"]["id"]] = entry["message"]
items = [
    {"id": str(uuid.uuid4()), "skill_slug": skill, "model_name": m["model"],
     "input_tokens": m["usage"]["input_tokens"], "output_tokens": m["usage"]["output_tokens"],
     "cache_read_tokens": m["usage"]["cache_read_input_tokens"],
     "cache_write_tokens": m["usage"]["cache_creation_input_tokens"],
     "usage_event_id": i, "source": "api"}
    for i, m in responses.items()
]
httpx.post(url + "/v1/token-measurements", json={"items": items},
           headers={"Authorization": "Bearer " + key}, timeout=30).raise_for_status()
"""


def transcript(path: Path, responses: int) -> str:
    """A session of ``responses`` responses, three lines each; its session id."""
    session = str(uuid.uuid4())
    with open(path, "w") as file:
        for number in range(responses):
            message = f"msg_01{uuid.uuid4().hex[:22]}"
            file.write(json.dumps({"type": "user", "sessionId": session,
                                   "message": {"role": "user", "content": f"step {number}"}}) + "\n")
            for block, output in ((0, 1), (1, 1), (2, 40 + number % 50)):
                usage = {"input_tokens": 3, "cache_creation_input_tokens": 500,
                         "cache_read_input_tokens": 20_000 + number, "output_tokens": output}
                file.write(json.dumps({
                    "type": "assistant", "sessionId": session, "requestId": f"req_{message}",
                    "message": {"id": message, "model": "claude-sonnet-4-5-20250929",
                                "role": "assistant",
                                "content": [{"type": "text", "text": f"block {block} " * 20}],
                                "usage": usage},
                }) + "\n")
    return session


def _wall(command: list[str], env: dict[str, str], stdin: str = "") -> float:
    start = time.perf_counter()
    done = subprocess.run(command, input=stdin, env=env, cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {done.stderr[-2000:]}")
    return elapsed


@contextmanager
def _hanging_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def _figure(key: str, what: str, times: list[float], baseline: list[float] | None = None) -> Figure:
    measured = statistics.median(times)
    figure = Figure(key=key, what=what, measured=round(measured, 3), unit="s", target=WITHIN)
    if baseline is not None:
        figure.baseline_what = "the same transcript read with json.loads and posted with httpx, nothing else"
        figure.baseline = round(statistics.median(baseline), 3)
        figure.ratio = round(measured / statistics.median(baseline), 2)
        figure.ratio_meaning = "hook time / baseline time"
    return figure


async def _alone(url: str, scale_name: str) -> list[Figure]:
    responses, rounds = SCALES.get(scale_name, SCALES["full"])
    await prepare_app_login()
    owner = await asyncpg.connect(url, server_settings=SERVER_SETTINGS)
    try:
        tenant = await owner.fetchval(
            "INSERT INTO tenants (name, slug) VALUES ('Hook bench', 'hook-bench') RETURNING id"
        )
        await owner.execute(
            "INSERT INTO skills (tenant_id, slug, name) VALUES ($1, 'general-use', 'General use')",
            tenant,
        )
    finally:
        await owner.close()
    key = (await create_api_key(tenant, "hook bench", "measurements:write")).key
    hook = [sys.executable, "-m", "everyskill.hook"]
    with served_main(url) as served, tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        base_env = {
            **os.environ,
            "EVERYSKILL_API_URL": served.base_url,
            "EVERYSKILL_API_KEY": key,
            "EVERYSKILL_CONFIG": str(scratch / "none.toml"),
            "EVERYSKILL_DEFAULT_SKILL": "general-use",
        }
        times: dict[str, list[float]] = {k: [] for k in
                                         ("end", "base", "again", "down", "hanging", "post", "start", "start_db")}
        with _hanging_server() as hanging:
            for number in range(rounds):
                path = scratch / f"session-{number}.jsonl"
                session = transcript(path, responses)
                env = {**base_env, "EVERYSKILL_STATE_DIR": str(scratch / f"state-{number}")}
                stop = {"hook_event_name": "Stop", "session_id": session, "transcript_path": str(path)}
                end = {**stop, "hook_event_name": "SessionEnd"}
                times["base"].append(_wall(
                    [sys.executable, "-c", BASELINE, str(path), served.base_url, key, "general-use"],
                    env))
                times["end"].append(_wall(hook, env, json.dumps(end)))
                times["again"].append(_wall(hook, env, json.dumps(stop)))
                other = scratch / f"down-{number}.jsonl"
                down_session = transcript(other, responses)
                down = {"hook_event_name": "SessionEnd", "session_id": down_session,
                        "transcript_path": str(other)}
                times["down"].append(_wall(
                    hook, {**env, "EVERYSKILL_API_URL": "http://127.0.0.1:9"}, json.dumps(down)))
                stalled = scratch / f"hanging-{number}.jsonl"
                stalled_session = transcript(stalled, responses)
                times["hanging"].append(_wall(
                    hook, {**env, "EVERYSKILL_API_URL": hanging},
                    json.dumps({**down, "session_id": stalled_session,
                                "transcript_path": str(stalled)})))
                times["post"].append(_wall(hook, env, json.dumps(
                    {"hook_event_name": "PostToolUse", "tool_name": "Skill",
                     "tool_input": {"skill": "general-use"}})))
                times["start"].append(_wall([sys.executable, "-c", "import everyskill.hook"], env))
                times["start_db"].append(_wall(
                    [sys.executable, "-c",
                     "import everyskill.hook, everyskill.rows, everyskill.tenancy"], env))
        stored = await _count_stored(url, tenant)
    # Each round's session stored by the hook, each response once (the
    # baseline's rows have source 'api'; the spooled sessions are not sent).
    expected = responses * rounds
    figures = [
        _figure("session_end", f"SessionEnd: {responses} responses read and stored", times["end"],
                times["base"]),
        _figure("stop_again", "Stop again: nothing new", times["again"]),
        _figure("api_down", f"API refusing: {responses} responses spooled", times["down"]),
        _figure("api_hanging", "API never answering: the deadline", times["hanging"]),
        _figure("post_tool_use", "PostToolUse: a skill's use counted", times["post"]),
        _figure("start", "import everyskill.hook", times["start"], times["start_db"]),
    ]
    figures[-1].target = None
    figures[-1].baseline_what = "the same with the database layer imported"
    figures[-1].ratio_meaning = "hook's imports / with the database layer"
    figures[0].checks = {f"stored {stored} of {expected} (each response once)": stored == expected}
    return figures


async def _count_stored(url: str, tenant: str) -> int:
    owner = await asyncpg.connect(url, server_settings=SERVER_SETTINGS)
    try:
        value = await owner.fetchval(
            "SELECT count(*) FROM token_measurements"
            " WHERE tenant_id = $1 AND source = 'hook'",
            tenant,
        )
        return int(value)
    finally:
        await owner.close()


def main(argv: list[str] | None = None) -> int:
    return run_alone("python -m perf.hook", _alone, argv)


if __name__ == "__main__":
    sys.exit(main())
