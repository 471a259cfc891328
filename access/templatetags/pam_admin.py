"""Admin template tags: a date hierarchy that stays fast on tables of millions of rows, and the index's alerts.

Django's `{% date_hierarchy %}` lists the years (months, days) that hold rows with `SELECT DISTINCT` over a date
truncation of every row, and finds its starting level with MIN and MAX in one aggregate: on a million audit events
that takes seconds. This tag renders the same links from the first and last value (two index-ordered LIMIT 1
reads) and one `EXISTS` per period between them, each a short range scan on the column's index.
"""

from __future__ import annotations

import datetime

from django import template
from django.contrib.admin.templatetags.base import InclusionAdminNode
from django.contrib.admin.utils import get_fields_from_path
from django.db import models
from django.template.defaultfilters import pluralize
from django.utils import formats, timezone
from django.utils.text import capfirst
from django.utils.translation import gettext as _

register = template.Library()


def _bounds(queryset, field_name: str):
    """The first and last value of the field in the list's rows (None, None when it holds none)."""
    values = queryset.exclude(**{f"{field_name}__isnull": True}).values_list(field_name, flat=True)
    first = values.order_by(field_name).first()
    if first is None:
        return None, None
    return first, values.order_by(f"-{field_name}").first()


def _as_local_date(value) -> datetime.date:
    if isinstance(value, datetime.datetime):
        value = timezone.localtime(value) if timezone.is_aware(value) else value
        return value.date()
    return value


def _period_start(day: datetime.date, is_datetime: bool):
    if not is_datetime:
        return day
    start = datetime.datetime.combine(day, datetime.time.min)
    return timezone.make_aware(start) if timezone.is_naive(start) and timezone.get_current_timezone() else start


def _has_rows(queryset, field_name: str, start: datetime.date, end: datetime.date, is_datetime: bool) -> bool:
    """Whether a row's field falls in [start, end): one range probe on the field's index."""
    return queryset.filter(
        **{
            f"{field_name}__gte": _period_start(start, is_datetime),
            f"{field_name}__lt": _period_start(end, is_datetime),
        }
    ).exists()


def _next_month(day: datetime.date) -> datetime.date:
    return datetime.date(day.year + day.month // 12, day.month % 12 + 1, 1)


def pam_date_hierarchy(cl):
    """The context of admin/date_hierarchy.html, as Django's `date_hierarchy` builds it, without full scans."""
    if not cl.date_hierarchy:
        return {}
    field_name = cl.date_hierarchy
    field = get_fields_from_path(cl.model, field_name)[-1]
    is_datetime = isinstance(field, models.DateTimeField)
    year_field, month_field, day_field = f"{field_name}__year", f"{field_name}__month", f"{field_name}__day"
    year_lookup, month_lookup, day_lookup = (cl.params.get(name) for name in (year_field, month_field, day_field))
    queryset = cl.queryset.order_by()

    def link(filters):
        return cl.get_query_string(filters, [f"{field_name}__"])

    first, last = _bounds(queryset, field_name)
    if not (year_lookup or month_lookup or day_lookup) and first is not None:
        first_day, last_day = _as_local_date(first), _as_local_date(last)
        if first_day.year == last_day.year:
            year_lookup = first_day.year
            if first_day.month == last_day.month:
                month_lookup = first_day.month

    if year_lookup and month_lookup and day_lookup:
        day = datetime.date(int(year_lookup), int(month_lookup), int(day_lookup))
        return {
            "show": True,
            "back": {
                "link": link({year_field: year_lookup, month_field: month_lookup}),
                "title": capfirst(formats.date_format(day, "YEAR_MONTH_FORMAT")),
            },
            "choices": [{"title": capfirst(formats.date_format(day, "MONTH_DAY_FORMAT"))}],
        }
    if first is None:
        return {
            "show": True,
            "back": {"link": link({}), "title": _("All dates")} if year_lookup else None,
            "choices": [],
        }
    first_day, last_day = _as_local_date(first), _as_local_date(last)
    if year_lookup and month_lookup:
        day, days = max(first_day, datetime.date(int(year_lookup), int(month_lookup), 1)), []
        while day <= last_day and day.month == int(month_lookup):
            following = day + datetime.timedelta(days=1)
            if _has_rows(queryset, field_name, day, following, is_datetime):
                days.append(day)
            day = following
        return {
            "show": True,
            "back": {"link": link({year_field: year_lookup}), "title": str(year_lookup)},
            "choices": [
                {
                    "link": link({year_field: year_lookup, month_field: month_lookup, day_field: day.day}),
                    "title": capfirst(formats.date_format(day, "MONTH_DAY_FORMAT")),
                }
                for day in days
            ],
        }
    if year_lookup:
        month, months = max(first_day.replace(day=1), datetime.date(int(year_lookup), 1, 1)), []
        while month <= last_day and month.year == int(year_lookup):
            following = _next_month(month)
            if _has_rows(queryset, field_name, month, following, is_datetime):
                months.append(month)
            month = following
        return {
            "show": True,
            "back": {"link": link({}), "title": _("All dates")},
            "choices": [
                {
                    "link": link({year_field: year_lookup, month_field: month.month}),
                    "title": capfirst(formats.date_format(month, "YEAR_MONTH_FORMAT")),
                }
                for month in months
            ],
        }
    years = [
        year
        for year in range(first_day.year, last_day.year + 1)
        if _has_rows(queryset, field_name, datetime.date(year, 1, 1), datetime.date(year + 1, 1, 1), is_datetime)
    ]
    return {
        "show": True,
        "back": None,
        "choices": [{"link": link({year_field: str(year)}), "title": str(year)} for year in years],
    }


@register.tag(name="pam_date_hierarchy")
def pam_date_hierarchy_tag(parser, token):
    return InclusionAdminNode(
        parser, token, func=pam_date_hierarchy, template_name="date_hierarchy.html", takes_context=False
    )


@register.simple_tag(name="pam_admin_alerts", takes_context=True)
def pam_admin_alerts(context):
    """Alert lines for the admin index: each stuck sink stream, with a link to the sink (see access.selectors.sinks).

    Shown to staff who may view sinks."""
    from django.urls import reverse

    from access.selectors.sinks import sinks_stuck

    request = context.get("request")
    if request is None or not request.user.has_perm("access.view_sink"):
        return []
    alerts = []
    for status in sinks_stuck():
        waited = timezone.now() - status.oldest_waiting_at if status.oldest_waiting_at else None
        minutes = int(waited.total_seconds() // 60) if waited else 0
        error = f": {status.last_error}" if status.last_error else ""
        alerts.append(
            {
                "text": f"Sink {status.sink.name} is stuck: {status.lag} {status.stream} "
                f"record{pluralize(status.lag)} waiting, the oldest for {minutes} min{error}",
                "url": reverse("admin:access_sink_change", args=[status.sink.pk]),
            }
        )
    return alerts
