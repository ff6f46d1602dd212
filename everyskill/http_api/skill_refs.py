"""A skill named by its slug in the body of a write, instead of by its id.

Contract
--------
- A feedback item (``POST /v1/feedback``) and a token measurement
  (``POST /v1/token-measurements``), alone or as an item of a batch, name
  their skill by ``skill_id`` or by ``skill_slug``: the catalogue's slug,
  unique in the tenant (``tables.Skill.slug``). A client outside the
  process (an assistant's hook, an MCP server) knows a skill by its name,
  and its key (``feedback:write``, ``measurements:write``) cannot read the
  catalogue to find the id.
- Their body models derive from :class:`NamesOneSkill`: exactly one of the
  two is given (``null`` counts as not given). Neither, or both, is a
  problem of the item's own validation on ``skill_slug``
  (``items[3].skill_slug`` in a batch), whose message says which, listed
  with the item's other problems in the same 422 (unless ``skill_id`` is
  refused itself: its own problem is then listed). :data:`SkillSlug` is
  the slug's type: text PostgreSQL can store, 1 to :data:`MAX_SLUG_INPUT`
  characters once stripped of surrounding whitespace, folded to lowercase
  (:func:`everyskill.catalogue.folded_slug`). Stored slugs are lowercase,
  and ``GET /v1/skills?slug=`` folds its slug the same way: a slug that
  finds a skill there names it here too (``Review-Code`` is
  ``review-code``).
- :func:`with_skill_ids` turns the items that give a slug into items that
  give their skill's id (``skill_id`` set, ``skill_slug`` None), in the
  current tenant scope, with one query for all the slugs of the request
  (:func:`everyskill.catalogue.skill_ids_by_slug`), none when no item gives
  a slug. Row-level security keeps the lookup to the key's tenant: another
  tenant's slug is not found, and the answer is byte for byte the one a
  slug no skill has gets. An archived skill's slug names it, as its id does
  (the catalogue records feedback and measurements on archived skills).
- A slug that names no skill of the tenant is a
  :class:`~everyskill.errors.NotFoundError` (404) naming the item's
  ``skill_slug`` (``items[3].skill_slug`` in a batch, with the ``index``).
  In a batch it names every item whose slug is unknown (its ``missing``,
  the problem's ``errors``), so that a client can re-attribute those items
  and send the batch again; nothing of the request is written.
- The query API gets the resolved id and nothing else: what is written, and
  what a replay is compared with, is the skill's id. An item sent with an
  ``id`` and ``skill_slug`` replays exactly as with that ``id`` and the
  skill's ``skill_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, TypeVar

import pydantic
from pydantic_core import PydanticCustomError, PydanticKnownError

from everyskill import catalogue
from everyskill.errors import UNSTORABLE, NotFoundError, storable

__all__ = [
    "MAX_SLUG_INPUT",
    "SKILL_ID_DESCRIPTION",
    "SKILL_SLUG_DESCRIPTION",
    "NamesOneSkill",
    "SkillSlug",
    "with_skill_ids",
]

#: The longest slug a body may give: as long as an id may be.
MAX_SLUG_INPUT = 200

SKILL_ID_DESCRIPTION = "The skill's id; give it or skill_slug, not both."
SKILL_SLUG_DESCRIPTION = (
    "The skill's slug (its unique name in the tenant, such as review-code), instead of"
    " skill_id; give one of the two. Read without surrounding whitespace and in lowercase,"
    " as slugs are stored. An archived skill's slug names it too."
)


def _storable(value: str) -> str:
    if not storable(value):
        raise PydanticCustomError("unstorable_text", UNSTORABLE)
    return value


def _folded(value: str) -> str:
    folded = catalogue.folded_slug(value)
    if not folded:  # Python strips a few characters pydantic leaves
        raise PydanticKnownError("string_too_short", {"min_length": 1})
    return folded


#: A slug as a body gives it (see the module's contract).
SkillSlug = Annotated[
    str,
    pydantic.StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_SLUG_INPUT),
    pydantic.AfterValidator(_storable),
    pydantic.AfterValidator(_folded),
]

_NEITHER = "name the skill: give its id as skill_id, or its slug as skill_slug"
_BOTH = "give skill_id or skill_slug, not both: each names the skill on its own"


class NamesOneSkill(pydantic.BaseModel):
    """A body item that names its skill by ``skill_id`` or ``skill_slug``
    (see the module's contract). A subclass may narrow ``skill_id``'s type
    (optional still); ``skill_slug`` must come after it (it does, as the
    last field of this base or after an inherited ``skill_id``)."""

    skill_id: str | None = pydantic.Field(default=None, description=SKILL_ID_DESCRIPTION)
    # Validated when absent too, so that the check below always runs.
    skill_slug: SkillSlug | None = pydantic.Field(
        default=None, description=SKILL_SLUG_DESCRIPTION, validate_default=True
    )

    # A field validator: it runs when the item's other fields are refused
    # too, so that its problem is listed with theirs.
    @pydantic.field_validator("skill_slug", mode="after")
    @classmethod
    def _names_one_skill(cls, slug: str | None, info: pydantic.ValidationInfo) -> str | None:
        if "skill_id" not in info.data:
            return slug  # skill_id was refused: its own problem is listed
        if info.data["skill_id"] is None and slug is None:
            raise PydanticCustomError("skill_reference", _NEITHER)
        if info.data["skill_id"] is not None and slug is not None:
            raise PydanticCustomError("skill_reference", _BOTH)
        return slug


Item = TypeVar("Item", bound=NamesOneSkill)


async def with_skill_ids(items: Sequence[Item], *, batch: bool) -> list[Item]:
    """``items`` with each slug replaced by its skill's id, looked up in the
    current tenant scope with one query; NotFoundError naming every item
    whose slug is unknown (``items[i].skill_slug`` when ``batch``). See the
    module's contract."""
    slugs = [item.skill_slug for item in items if item.skill_slug is not None]
    if not slugs:
        return list(items)
    ids = await catalogue.skill_ids_by_slug(slugs)
    unknown: list[tuple[object, str | None]] = [
        (item.skill_slug, f"items[{index}].skill_slug" if batch else "skill_slug")
        for index, item in enumerate(items)
        if item.skill_slug is not None and item.skill_slug not in ids
    ]
    if unknown:
        (slug, field), *more = unknown
        raise NotFoundError("skill", slug, field, more=more)
    return [
        item
        if item.skill_slug is None
        # Not validated again: the id is the database's.
        else item.model_copy(update={"skill_id": ids[item.skill_slug], "skill_slug": None})
        for item in items
    ]
