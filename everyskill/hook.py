"""``everyskill-hook``: Claude Code hooks that report token usage and ask for feedback.

Claude Code runs the command with the hook's JSON on stdin
(``hook_event_name``, ``session_id``, ``transcript_path``, ``cwd``, and for
``PostToolUse`` ``tool_name`` and ``tool_input``). The API's address and
key come from :mod:`everyskill.client_config`.

Contract
--------
- **It never breaks the session.** :func:`main` exits 0 whatever happens
  (a bad input, a missing or broken configuration, the API down, a bug),
  and it gives up on the API ``hook_deadline`` seconds after its start
  (:data:`DEADLINE` by default, see :mod:`everyskill.client_config`),
  leaving what it did not send in the spool. It reads at most
  :data:`READ_LIMIT` bytes of each transcript per run (the rest is read by
  the next runs). Problems are written to ``hook.log`` in the state
  directory (``0600``, rotated at 1 MB), never to stdout, which Claude Code
  reads as the hook's output.
- **Stop, SubagentStop and SessionEnd: token usage.** The transcript is
  read from where the last run stopped (:mod:`everyskill.transcripts`; a
  per-transcript offset and the skill running there are kept in the
  state directory, and a transcript shorter than its offset is read
  again from the start), with the subagents' own transcripts
  (``<session>/subagents/agent-*.jsonl``, or ``agent-*.jsonl`` beside it
  whose lines name the session). Each API response becomes one token
  measurement (:func:`measurement`) with source ``hook``, posted in
  batches to ``POST /v1/token-measurements``. A Stop holds back the last
  response of each file (it may still be written, see
  :mod:`everyskill.transcripts`); SessionEnd reads everything, and so does
  any run for a transcript left with a response held back that has not
  changed for :data:`STALE_AFTER` seconds (a session that ended without
  SessionEnd). A response of a subagent's file whose ``message.id`` the
  session's own file has (a side question replays a parent's response)
  is the parent's. A subagent's file is read once the session's file
  names the subagent (its ``Task`` result), or by SessionEnd; its
  responses are recorded under the skill that ran when it was launched.

  - Each measurement's ``id`` is :func:`measurement_id` of the session and
    the response's ``message.id``: a response read twice (a run repeated,
    the state lost, a Stop in the middle of the session and another at
    its end) is sent with the same id, and the API stores it once (a
    replay writes nothing).
  - The items are first added to the spool of the configuration
    (:meth:`everyskill.spool.Spool.for_client`), the offsets are saved
    after that, and then the spool's measurements are delivered: a crash
    at any point loses nothing, and what the API did not take (it is
    unreachable, answers 429 or 503, or the deadline passed) is sent by a
    later run. A measurement refused for its ``user_id`` (a configured
    user that is not the tenant's) is sent without it, anonymous, and the
    error is logged.
  - The skill: a response made while a skill ran is recorded under the
    catalogue slug of that skill's name (``[skills]`` of the
    configuration maps names to slugs; by default they are the same). A
    skill is an EverySkill skill when the API knows its slug: when it
    answers that the slug names no skill, the measurement is recorded
    under ``default_skill`` instead, and so is a response made outside
    any skill, when ``unattributed`` is ``default`` (the default) and a
    default skill is set. Otherwise (``skip``, or no default skill) such
    responses are not recorded: the ones outside any skill are not sent,
    and the ones of a non-catalogue skill are set aside in the spool's
    ``refused.jsonl``.
- **PostToolUse of the ``Skill`` tool: feedback.** The use is counted per
  user (``user_id``, else the operating-system user) and skill
  (:mod:`everyskill.feedback_prompts`); on the first 3 uses and every 10th
  after, the hook prints the output that asks the user for feedback. A
  skill the API said is not in the catalogue (within the last
  :data:`NOT_CATALOGUE_FOR` seconds), and a plugin's skill
  (``plugin:name``) that ``[skills]`` does not map, are not asked about.
- Any other event does nothing.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import logging
import logging.handlers
import os
import re
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from everyskill import client_config, feedback_prompts, transcripts
from everyskill.api_client import ApiClient, Delivery
from everyskill.spool import Spool

__all__ = ["DEADLINE", "main", "measurement", "measurement_id", "run"]

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

logger = logging.getLogger("everyskill.hook")

#: Seconds from the hook's start after which it stops waiting for the API,
#: unless the configuration's ``hook_deadline`` says otherwise.
DEADLINE = client_config.ClientConfig.hook_deadline
#: Bytes of a transcript read per run at most.
READ_LIMIT = 4 << 20
#: Seconds the API's "no such skill" is remembered for a slug.
NOT_CATALOGUE_FOR = 86_400
#: Offsets of transcripts unchanged for this long are forgotten.
FORGET_AFTER = 30 * 86_400
MEASUREMENTS_PATH = "/token-measurements"
# Requests small enough to finish well within the deadline.
_BATCH_SIZES = {MEASUREMENTS_PATH: 1_000}
#: Seconds after which a transcript that stopped changing is read to its end
#: (its session ended without a SessionEnd hook, say).
STALE_AFTER = 1800
#: Seconds between two looks for such transcripts (each reads every offset).
STALE_SCAN_EVERY = 600
_USAGE_EVENTS = frozenset({"Stop", "SubagentStop", "SessionEnd"})
_SKILL_TOOL = "Skill"
# A namespace for the ids, so that they are this hook's alone.
_ID_NAMESPACE = b"everyskill-hook/token-measurement/v1\x00"


def measurement_id(session_id: str, message_id: str) -> str:
    """The measurement id of a response: a version-4 UUID made from a hash.

    The API takes only random (version 4 or 7) ids, so that no tenant can
    take another's id first. This one is the SHA-256 of the session id and
    the response's ``message.id``, with the version and variant bits of a
    version-4 UUID set: it cannot be guessed without both, which only the
    user's machine and the provider know, and it is the same each time
    the same response is read.
    """
    digest = bytearray(
        hashlib.sha256(_ID_NAMESPACE + f"{session_id}\x00{message_id}".encode()).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x40
    digest[8] = (digest[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(digest)))


def model_provider(model: str) -> str:
    """The provider recorded for a transcript's model name.

    Claude Code speaks Anthropic's Messages API, and Claude models are
    Anthropic's on every cloud (``claude-...``, ``us.anthropic.claude-...``,
    ``claude-...@date``). Another model name comes from a server that
    speaks the same API for another vendor's model; its vendor is not in
    the transcript, so it is recorded as ``unknown`` (and its cost is
    computed only if the tenant set a price for it).
    """
    return "anthropic" if "claude" in model.lower() else "unknown"


def measurement(
    response: transcripts.Response,
    session_id: str,
    slug: str,
    user_id: str | None,
) -> dict[str, Any]:
    """The token-measurement item of one response, under skill ``slug``."""
    item: dict[str, Any] = {
        "id": measurement_id(response.session_id or session_id, response.message_id),
        "skill_slug": slug,
        "model_name": response.model,
        "model_provider": model_provider(response.model),
        "input_tokens": response.input_tokens,
        "output_tokens": response.output_tokens,
        "cache_read_tokens": response.cache_read_tokens,
        "cache_write_tokens": response.cache_write_tokens,
        "usage_event_id": response.message_id,
        "source": "hook",
    }
    if user_id is not None:
        item["user_id"] = user_id
    return item


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` (0600) by renaming a new file over it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(data, file)
    os.replace(temporary, path)


def _not_catalogue(state_dir: Path, now: float | None = None) -> dict[str, float]:
    """The slugs the API said name no skill of the tenant, with when it said so."""
    given = _read_json(state_dir / "not-catalogue.json").get("slugs", {})
    now = time.time() if now is None else now
    if not isinstance(given, dict):
        return {}
    return {
        slug: when
        for slug, when in given.items()
        if isinstance(when, (int, float)) and now - when < NOT_CATALOGUE_FOR
    }


def _agent_id(path: Path) -> str | None:
    """The subagent id of ``agent-<id>.jsonl``."""
    name = path.name
    return name[len("agent-") : -len(".jsonl")] if name.startswith("agent-") else None


def _transcripts_of(event: dict[str, Any]) -> list[Path]:
    """The session's transcript, then its subagents' transcripts (both layouts)."""
    given = event.get("transcript_path")
    if not isinstance(given, str) or not given:
        return []
    main_file = Path(given).expanduser()
    if not main_file.is_file():
        return []
    session_id = event.get("session_id")
    found = [main_file]
    if isinstance(session_id, str) and _SESSION_ID.fullmatch(session_id):
        nested = main_file.parent / session_id / "subagents"
        if nested.is_dir():
            found += sorted(nested.glob("agent-*.jsonl"))
        # Before Claude Code 2.1.2: agent-<id>.jsonl beside the session's file,
        # among those of the project's other sessions.
        for sibling in sorted(main_file.parent.glob("agent-*.jsonl")):
            if transcripts.session_of(sibling) == session_id:
                found.append(sibling)
    given_agent = event.get("agent_transcript_path")
    if isinstance(given_agent, str) and given_agent:
        agent_file = Path(given_agent).expanduser()
        if agent_file.is_file() and agent_file not in found:
            found.append(agent_file)
    return found


def _offset_file(state_dir: Path, path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return state_dir / "transcripts" / f"{key}.json"


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _read_new(
    path: Path,
    state_dir: Path,
    *,
    final: bool,
    parent: dict[str, Any],
) -> tuple[transcripts.Reading, Path, dict[str, Any]]:
    """The responses added to ``path`` since the last run, and the offset to save.

    ``parent`` is the saved offset of the session's own file: the usage and
    skill its Task results reported for each subagent.
    """
    offset_file = _offset_file(state_dir, path)
    kept = _read_json(offset_file)
    start = kept.get("end", 0) if isinstance(kept.get("end"), int) else 0
    skill = kept.get("skill") if isinstance(kept.get("skill"), str) else None
    agent = _agent_id(path)
    if start > path.stat().st_size:
        start, skill = 0, None
    if start == 0 and agent is not None:
        launched_under = _mapping(parent.get("agent_skill")).get(agent)
        skill = launched_under if isinstance(launched_under, str) else None
    last_usage = _mapping(parent.get("agent_usage")).get(agent) if agent is not None else None
    reading = transcripts.read_responses(
        path,
        start=start,
        skill=skill,
        final=final,
        last_usage=last_usage if isinstance(last_usage, dict) else None,
        limit=READ_LIMIT,
    )
    if reading.skipped:
        logger.warning("%s: %d line(s) that are not JSON skipped", path, reading.skipped)
    offset = {
        "path": str(path),
        "end": reading.end,
        "skill": reading.skill,
        "held": reading.end < path.stat().st_size,
        "agent_usage": {**_mapping(kept.get("agent_usage")), **reading.agent_usage},
        "agent_skill": {**_mapping(kept.get("agent_skill")), **reading.agent_skill},
    }
    return reading, offset_file, offset


def _items(
    responses: Sequence[transcripts.Response],
    session_id: str,
    config: client_config.ClientConfig,
) -> list[dict[str, Any]]:
    items = []
    default = config.default_skill if config.unattributed == "default" else None
    for response in responses:
        slug = config.slug_of(response.skill) if response.skill else default
        if slug is None:
            continue
        items.append(measurement(response, session_id, slug, config.user_id))
    return items


async def _deliver(
    spool: Spool, config: client_config.ClientConfig, timeout: float, deadline: float
) -> Delivery:
    default = config.default_skill if config.unattributed == "default" else None
    unknown: set[str] = set()

    def repair(item: dict[str, Any], field: str) -> dict[str, Any] | None:
        if field == "user_id" and "user_id" in item:
            logger.error(
                "user_id %r is not a user of the key's tenant: measurement %s sent without it;"
                " fix EVERYSKILL_USER_ID (or user_id in the configuration file)",
                item["user_id"],
                item.get("id"),
            )
            return {k: v for k, v in item.items() if k != "user_id"}
        slug = item.get("skill_slug")
        if field != "skill_slug" or not isinstance(slug, str):
            return None
        unknown.add(slug)
        if default is None or slug == default:
            return None
        return {**item, "skill_slug": default}

    async with ApiClient(config.api_url, config.api_key, timeout=timeout) as client:
        delivery = await spool.deliver(
            client,
            batch_sizes=_BATCH_SIZES,
            repair=repair,
            paths=(MEASUREMENTS_PATH,),
            deadline=deadline,
            lock_wait=0,
        )
    if unknown:
        now = time.time()
        known = _not_catalogue(config.state_dir, now)
        _write_json(
            config.state_dir / "not-catalogue.json",
            {"slugs": {**known, **{slug: now for slug in unknown}}},
        )
    return delivery


def _responses(
    files: Sequence[Path], state_dir: Path, *, final: bool
) -> tuple[list[transcripts.Response], list[tuple[Path, dict[str, Any]]]]:
    """The new responses of a session's files, each once, and the offsets to save.

    ``files[0]`` is the session's own file, read first: its Task results
    complete and attribute the subagents' responses, and its message ids
    (the one held back included) win over a subagent file's copy.
    """
    responses: dict[str, transcripts.Response] = {}
    offsets: list[tuple[Path, dict[str, Any]]] = []
    parent: dict[str, Any] = {}
    parents_ids: set[str] = set()
    for index, path in enumerate(files):
        agent = _agent_id(path)
        named = set(_mapping(parent.get("agent_usage"))) | set(_mapping(parent.get("agent_skill")))
        if index > 0 and not final and agent is not None and agent not in named:
            # A subagent the session's file does not name yet (running, or
            # its Task result not written): read once it is, to know the
            # skill it works for; a stale scan or SessionEnd reads it anyway.
            offset_file = _offset_file(state_dir, path)
            if not offset_file.exists():
                offsets.append((offset_file, {"path": str(path), "end": 0, "held": True}))
            continue
        reading, offset_file, offset = _read_new(path, state_dir, final=final, parent=parent)
        if index == 0:
            parent = offset
            parents_ids = {r.message_id for r in reading.responses}
            if reading.held is not None:
                parents_ids.add(reading.held.message_id)
        for response in reading.responses:
            if index > 0 and response.message_id in parents_ids:
                continue
            responses.setdefault(response.message_id, response)
        offsets.append((offset_file, offset))
    return list(responses.values()), offsets


def _stale_transcripts(state_dir: Path, now: float, skip: Sequence[Path]) -> list[Path]:
    """Transcripts whose last response was held back and that no longer change.

    Offsets of transcripts gone, or unchanged for :data:`FORGET_AFTER`
    seconds, are deleted on the way.
    """
    stale = []
    for offset_file in sorted((state_dir / "transcripts").glob("*.json")):
        kept = _read_json(offset_file)
        path = Path(str(kept.get("path", "")))
        try:
            age = now - path.stat().st_mtime
        except OSError:
            offset_file.unlink(missing_ok=True)
            continue
        if age >= FORGET_AFTER:
            offset_file.unlink(missing_ok=True)
        elif kept.get("held") and age >= STALE_AFTER and path not in skip:
            stale.append(path)
    return stale[:5]


def _warn_of_other_spools(spool: Spool) -> None:
    """Log the spools of other configurations that still hold measurements.

    A spool belongs to one API address and key: measurements kept under a
    key since replaced are not sent with the new one (it may be another
    tenant's). A person decides: set the old key back for a run, or delete
    the directory.
    """
    for other in spool.directory.parent.iterdir():
        if other != spool.directory and other.is_dir() and Spool(other).pending(
            paths=(MEASUREMENTS_PATH,)
        ):
            logger.warning(
                "%s holds measurements kept for another API address or key; they are sent"
                " only with that configuration",
                other,
            )


async def report_usage(
    event: dict[str, Any], config: client_config.ClientConfig, deadline: float
) -> None:
    """Read the event's transcripts, spool their new responses, deliver the spool."""
    session_id = str(event.get("session_id") or "")
    files = _transcripts_of(event)
    final = event.get("hook_event_name") == "SessionEnd"
    responses, offsets = _responses(files, config.state_dir, final=final)
    scanned = config.state_dir / "stale-scan.json"
    if time.time() - float(_read_json(scanned).get("at", 0)) >= STALE_SCAN_EVERY:
        _write_json(scanned, {"at": time.time()})
        for path in _stale_transcripts(config.state_dir, time.time(), files):
            found, saved = _responses([path], config.state_dir, final=True)
            responses += found
            offsets += saved
    spool = Spool.for_client(config.state_dir, config.api_url, config.api_key)
    spool.add(
        MEASUREMENTS_PATH,
        _items(responses, session_id, config),
        per_file=_BATCH_SIZES[MEASUREMENTS_PATH],
    )
    for offset_file, offset in offsets:
        _write_json(offset_file, offset)
    _warn_of_other_spools(spool)
    if spool.pending(paths=(MEASUREMENTS_PATH,)) == 0:
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0.05:
        logger.warning("no time left to send the measurements: they stay in the spool")
        return
    try:
        delivery = await asyncio.wait_for(
            _deliver(spool, config, min(config.timeout, remaining), deadline), remaining
        )
    except TimeoutError:
        logger.warning("the API did not answer in time; the measurements stay in the spool")
        return
    if delivery.error is not None:
        logger.warning("measurements kept in the spool: %s", delivery.error)
    for item, why in delivery.refused:
        logger.warning("measurement %s not recorded: %s", item.get("id"), why)


def ask_for_feedback(event: dict[str, Any], config: client_config.ClientConfig) -> dict[str, Any] | None:
    """The PostToolUse output for a skill's use, when this use asks for feedback."""
    if event.get("tool_name") != _SKILL_TOOL:
        return None
    given = event.get("tool_input")
    name = given.get("skill", given.get("command")) if isinstance(given, dict) else None
    if not isinstance(name, str) or not name.strip():
        return None
    name = name.strip().lstrip("/")
    if ":" in name and name not in config.skills:
        return None  # a plugin's skill, not the catalogue's
    slug = config.slug_of(name)
    if slug in _not_catalogue(config.state_dir):
        return None
    user = config.user_id or getpass.getuser()
    use = feedback_prompts.UseCounter(config.state_dir / "skill-uses.json").count_use(user, slug)
    return feedback_prompts.prompt_output(slug, use) if feedback_prompts.should_ask(use) else None


def _log_to(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = state_dir / "hook.log"
    os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    handler = logging.handlers.RotatingFileHandler(
        log, maxBytes=1_000_000, backupCount=1, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("everyskill").addHandler(handler)
    logging.getLogger("everyskill").setLevel(logging.INFO)


def run(event: dict[str, Any], config: client_config.ClientConfig, deadline: float) -> dict[str, Any] | None:
    """Handle one hook event; the JSON to print, if any."""
    name = event.get("hook_event_name")
    if name in _USAGE_EVENTS:
        asyncio.run(report_usage(event, config, deadline))
        return None
    if name == "PostToolUse":
        return ask_for_feedback(event, config)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: always exits 0; see the module's contract."""
    started = time.monotonic()
    os.umask(0o077)  # every file it makes is its user's alone (the log after rotation too)
    try:
        config = client_config.load()
    except client_config.ConfigError as error:
        print(f"everyskill-hook: {error}", file=sys.stderr)
        return 0
    except BaseException as error:  # noqa: BLE001 - a hook must never fail the session
        print(f"everyskill-hook: the configuration cannot be read: {error!r}", file=sys.stderr)
        return 0
    try:
        _log_to(config.state_dir)
        event = json.loads(sys.stdin.read() or "{}")
        if not isinstance(event, dict):
            raise ValueError("the hook input is not a JSON object")
        output = run(event, config, started + config.hook_deadline)
        if output is not None:
            print(json.dumps(output))
    except BaseException:  # noqa: BLE001 - a hook must never fail the session
        logger.exception("everyskill-hook failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
