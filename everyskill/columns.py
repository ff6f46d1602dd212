"""What the application role reads of each table: its select lists.

Contract
--------
- The application role may not read some columns (PostgreSQL's column
  grants refuse them, and with them ``SELECT *`` and ``RETURNING *``): the
  staff login that reviewed a feedback item, ``skill_feedback.reviewed_by_admin``.
- :func:`select_list` is the select list of a table for the application:
  every column, in the table's order, and in place of a hidden column an
  expression of what the application may know, under the same name. For
  ``reviewed_by_admin`` that is ``'staff'`` when platform staff reviewed the
  item (reviewed, with no tenant user as reviewer) and NULL otherwise: rows
  keep their shape, and a tenant learns that staff reviewed an item, not who.
"""

from __future__ import annotations

from functools import cache

from piccolo.table import Table

__all__ = ["HIDDEN", "select_list"]

#: Columns the application role may not read, by table, with what it reads instead.
HIDDEN: dict[str, dict[str, str]] = {
    "skill_feedback": {
        "reviewed_by_admin": "CASE WHEN {p}reviewed_at IS NOT NULL AND {p}reviewed_by IS NULL"
        " THEN 'staff' END",
    },
}


@cache
def select_list(table: type[Table], alias: str = "") -> str:
    """The select list of ``table`` for the application role; with
    ``alias``, each column qualified by it."""
    prefix = f"{alias}." if alias else ""
    hidden = HIDDEN.get(table._meta.tablename, {})
    items = []
    for column in table._meta.columns:
        name = column._meta.db_column_name
        if name in hidden:
            items.append(f"{hidden[name].format(p=prefix)} AS {name}")
        else:
            items.append(f"{prefix}{name}")
    return ", ".join(items)
