"""The README's short tour, run as written against a served main job.

The tour's ``sh`` block is taken from ``README.md`` and run by bash from the
project root, against ``main.py`` serving a fresh database with its sample
data, with only the address changed (the tour says port 8000; the test
serves on a free one). What the tour says happens must happen: the key is
made for Acme Robotics, the feedback is stored for one of its skills, the
skill's ``total_feedback`` counts it (it equals a recount), and the same request with a Globex
Health skill is a 404.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import httpx

from everyskill.database import environment_for
from tests.browser import served_admin
from tests.support import connected

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TOUR_HEADING = "## A short tour"


def tour_block() -> str:
    """The first ``sh`` block under the README's tour heading."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert TOUR_HEADING in readme, "the README has no short tour"
    section = readme.split(TOUR_HEADING, 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the tour has no sh block"
    return match.group(1)


async def test_the_readme_tour_works_as_written(fresh_database: str, tmp_path: Path) -> None:
    block = tour_block()
    assert "http://127.0.0.1:8000" in block
    with served_admin(
        fresh_database, tmp_path, username="tour-staff", password="a long password for the tour"
    ) as base:
        # The key, on a line of its own after the last answer (which ends without one).
        script = block.replace("http://127.0.0.1:8000", base) + '\nprintf "\\nKEY=%s\\n" "$KEY"\n'
        env = {**os.environ, **environment_for(fresh_database)}
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
        output, _, key_line = done.stdout.rstrip("\n").rpartition("\n")
        key = key_line.removeprefix("KEY=")
        answer = json.loads(output)
        row = answer["row"]
        assert (row["feedback_type"], row["sentiment"], row["source"]) == ("thumbs_up", 1, "api")

        async with connected(fresh_database) as owner:
            stored = await owner.fetchrow(
                """
                SELECT t.slug, s.total_feedback,
                       (SELECT count(*) FROM skill_feedback f WHERE f.skill_id = s.id) AS counted
                  FROM skill_feedback f JOIN skills s ON s.id = f.skill_id
                  JOIN tenants t ON t.id = f.tenant_id
                 WHERE f.id = $1
                """,
                row["id"],
            )
            assert stored is not None, "the answer's row is not stored"
            assert stored["slug"] == "acme-robotics"
            # The aggregate counts the feedback that is not dismissed.
            not_dismissed = await owner.fetchval(
                "SELECT count(*) FROM skill_feedback WHERE skill_id = $1 AND status <> 'dismissed'",
                row["skill_id"],
            )
            assert stored["total_feedback"] == not_dismissed
            globex_skill = await owner.fetchval(
                "SELECT s.id FROM skills s JOIN tenants t ON t.id = s.tenant_id"
                " WHERE t.slug = 'globex-health' LIMIT 1"
            )

        async with httpx.AsyncClient(base_url=base) as client:
            refused = await client.post(
                "/v1/feedback",
                headers={"Authorization": f"Bearer {key}"},
                json={"skill_id": globex_skill, "feedback_type": "thumbs_up", "sentiment": 1,
                      "source": "api"},
            )
        assert refused.status_code == 404, refused.text
