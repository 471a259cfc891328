"""Human durations: `90s`, `30m`, `1h`, `2d`, `1h30m` or a plain number of seconds (`3600`)."""

import re
from datetime import timedelta

from django.core.exceptions import ValidationError

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+)([smhd])")
_WHOLE = re.compile(r"^(?:\d+[smhd])+$")


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse a duration a person typed; raise ValidationError with an example when it is not one."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValidationError("Enter a duration such as 90s, 30m, 1h or 3600 (seconds).", code="invalid")
    elif isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        if text.isdigit():
            seconds = int(text)
        elif _WHOLE.match(text):
            seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))
        else:
            raise ValidationError(
                "%(value)r is not a duration: use a number of seconds (3600) or units s, m, h, d (90s, 30m, 1h).",
                code="invalid",
                params={"value": str(value)},
            )
    if seconds <= 0:
        raise ValidationError("A duration must be positive.", code="not_positive")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta | None) -> str:
    """The shortest human form of a duration (`1h30m`, `45s`), the inverse of parse_duration."""
    if value is None:
        return ""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNIT_SECONDS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
