"""Admin pieces for tables of millions of rows (the audit trail, command logs): no full scans per page view.

- `IndexedValuesListFilter`: the values of an indexed column for the filter sidebar, read by a recursive
  "skip scan" (the next value above the last one, one index probe each) instead of `SELECT DISTINCT`, which reads
  every row. Use it on columns that lead an index and hold few distinct values (actions, target types).
- `EstimatedCountPaginator`: on PostgreSQL an unfiltered list takes its row count from the planner's statistics
  (`pg_class.reltuples`, kept by autovacuum) once the table is large, instead of `COUNT(*)` over every row;
  filtered lists, small tables and SQLite (whose `COUNT(*)` reads the smallest index) count exactly.
"""

from __future__ import annotations

from django.contrib.admin.filters import AllValuesFieldListFilter
from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

ESTIMATE_ABOVE_ROWS = 100_000


def indexed_distinct_values(model, column: str, *, using: str = "default") -> list:
    """The distinct non-NULL values of `column`, ascending, with one index probe per value (a skip scan)."""
    connection = connections[using]
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(column)
    # Only quoted identifiers from the model's metadata are interpolated; no value comes from a request.
    sql = (
        f"WITH RECURSIVE found(value) AS (SELECT MIN({column}) FROM {table} UNION ALL "  # noqa: S608
        f"SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > found.value) FROM found "
        f"WHERE found.value IS NOT NULL) SELECT value FROM found WHERE value IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return [row[0] for row in cursor.fetchall()]


class IndexedValuesListFilter(AllValuesFieldListFilter):
    """Django's all-values filter, with its choices read by a skip scan over the column's index."""

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        self.lookup_choices = indexed_distinct_values(model, field.column, using=model_admin.get_queryset(request).db)


class EstimatedCountPaginator(Paginator):
    """A paginator that does not count a large unfiltered PostgreSQL table row by row (see the module's note)."""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        query = getattr(queryset, "query", None)
        if query is not None and not query.where and not query.distinct and not query.combinator:
            connection = connections[queryset.db]
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                        [queryset.model._meta.db_table],
                    )
                    row = cursor.fetchone()
                if row and row[0] > ESTIMATE_ABOVE_ROWS:
                    return int(row[0])
        return super().count
