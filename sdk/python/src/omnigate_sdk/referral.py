"""Attribution from a landing URL: UTM parameters and ad click ids (same rules as the Rust SDK)."""

from urllib.parse import parse_qsl

from wit_world.imports import types

CLICK_IDS = ["fbclid", "gclid", "gbraid", "wbraid", "ttclid", "msclkid", "li_fat_id", "ctwa_clid"]
"""Click ids kept in `Referral.click_ids`."""
PAID_CLICK_IDS = ["gclid", "gbraid", "wbraid", "msclkid", "ttclid", "li_fat_id"]
"""Click ids only a paid click carries (an `fbclid` is added to organic links too)."""
PAID_MEDIUMS = ["cpc", "ppc", "paid", "paid_social", "paidsocial", "ad", "ads", "display", "cpm"]
"""`utm_medium` values that mean a paid placement (case-insensitive)."""
UTM = ["source", "medium", "campaign", "term", "content"]


def _referral(source, **fields) -> types.Referral:
    values = dict(ad_id=None, campaign=None, click_ids=[], utm=[], url=None, referrer=None,
                  ref_payload=None, headline=None, body=None, media_url=None)
    values.update(fields)
    return types.Referral(source=source, **values)


def link_referral(payload: str) -> types.Referral:
    """A link referral carrying only a ref payload (a deep link's start parameter)."""
    return _referral(types.ReferralSource.LINK, ref_payload=payload)


def referral_from_url(url: str, referrer: str | None = None) -> types.Referral | None:
    """The referral behind a visit to `url`, or None when it carries no UTM parameter or
    click id and there is no referrer. The first non-empty occurrence of a name wins."""
    referrer = referrer.strip() if referrer else None
    referrer = referrer or None
    query = url.split("#", 1)[0].partition("?")[2]
    params = parse_qsl(query, keep_blank_values=True)

    def first(name: str) -> str | None:
        return next((value for key, value in params if key == name and value), None)

    utm = [types.Pair(name, value) for name in UTM if (value := first(f"utm_{name}"))]
    click_ids = [types.Pair(name, value) for name in CLICK_IDS if (value := first(name))]
    if not utm and not click_ids and referrer is None:
        return None
    medium = (first("utm_medium") or "").lower()
    paid = any(p.name in PAID_CLICK_IDS for p in click_ids) or medium in PAID_MEDIUMS
    return _referral(
        types.ReferralSource.AD if paid else types.ReferralSource.LINK,
        campaign=first("utm_campaign"),
        click_ids=click_ids,
        utm=utm,
        url=url,
        referrer=referrer,
    )
