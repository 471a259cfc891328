"""The portal's lists (leases, sessions, requests): one way to filter by state and text, and to page.

A list reads `?state=` (one of the choices the page offers) and `?q=` (words matched against the fields the page
names), and shows `PAGE_SIZE` rows a page with links that keep the filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.core.paginator import Page, Paginator
from django.db.models import Q, QuerySet

PAGE_SIZE = 25


@dataclass(frozen=True)
class Listing:
    """One page of a filtered list, with what the filter form and the pager need."""

    page: Page
    state: str
    q: str
    states: list[tuple[str, str]]

    @property
    def rows(self):
        return self.page.object_list

    @property
    def filtered(self) -> bool:
        return bool(self.state or self.q)

    def query(self, page_number: int) -> str:
        """The query string of another page of the same filter."""
        params = {key: value for key, value in (("state", self.state), ("q", self.q)) if value}
        return "?" + urlencode({**params, "page": page_number})


def listing(
    request,
    queryset: QuerySet,
    *,
    states: list[tuple[str, str]],
    state_filters: dict[str, Q] | None = None,
    search_fields: tuple[str, ...] = (),
) -> Listing:
    """Filter `queryset` by the request's `state` and `q`, and return the requested page of it."""
    state = request.GET.get("state", "")
    if state not in dict(states):
        state = ""
    q = request.GET.get("q", "").strip()[:100]
    if state:
        queryset = queryset.filter((state_filters or {}).get(state, Q(state=state)))
    for word in q.split():
        match = Q()
        for name in search_fields:
            match |= Q(**{f"{name}__icontains": word})
        queryset = queryset.filter(match)
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    return Listing(page=page, state=state, q=q, states=states)
