"""English formats (settings.FORMAT_MODULE_PATH): `2026-05-01 14:03:09 UTC` rather than `May 1, 2026, 2:03 p.m.`,
so a security team reads every recorded time to the second, the same way on every admin page."""

DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
