"""RFC 3339 timestamps <-> milliseconds since the Unix epoch."""

from datetime import datetime, timezone


def parse_rfc3339(text: str) -> int | None:
    """Milliseconds since the epoch, or None when `text` is not RFC 3339 with an offset."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None or "T" not in text.upper():
        return None
    return int(parsed.timestamp() * 1000)


def format_rfc3339(millis: int) -> str:
    """`2026-11-24T10:00:00Z` (with milliseconds when there are any)."""
    moment = datetime.fromtimestamp(millis / 1000, tz=timezone.utc)
    if millis % 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
