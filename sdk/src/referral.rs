//! Attribution from a landing URL: UTM parameters and ad click ids.

use std::borrow::Cow;

use crate::{Pair, Referral, ReferralSource};

/// Click ids kept in [`Referral::click_ids`], by the name the ad network gives them.
const CLICK_IDS: [&str; 8] = [
    "fbclid",
    "gclid",
    "gbraid",
    "wbraid",
    "ttclid",
    "msclkid",
    "li_fat_id",
    "ctwa_clid",
];

/// Click ids that only a paid click carries (an `fbclid` is added to organic links too).
const PAID_CLICK_IDS: [&str; 6] = [
    "gclid",
    "gbraid",
    "wbraid",
    "msclkid",
    "ttclid",
    "li_fat_id",
];

/// `utm_medium` values that mean a paid placement (compared case-insensitively).
const PAID_MEDIUMS: [&str; 9] = [
    "cpc",
    "ppc",
    "paid",
    "paid_social",
    "paidsocial",
    "ad",
    "ads",
    "display",
    "cpm",
];

const UTM: [&str; 5] = ["source", "medium", "campaign", "term", "content"];

/// A link referral carrying only `payload`: a deep link's start parameter (Telegram's
/// `/start <payload>`), an e-mail plus-address (`support+<payload>@…`). The host redeems
/// a payload that is a live link token.
pub fn link_referral(payload: &str) -> Referral {
    Referral {
        source: ReferralSource::Link,
        ad_id: None,
        campaign: None,
        click_ids: Vec::new(),
        utm: Vec::new(),
        url: None,
        referrer: None,
        ref_payload: Some(payload.to_owned()),
        headline: None,
        body: None,
        media_url: None,
    }
}

/// The referral behind a visit to `url` (coming from `referrer`, if known).
///
/// - `utm_source`, `utm_medium`, `utm_campaign`, `utm_term`, `utm_content` go to
///   [`Referral::utm`] named without the prefix; the campaign is also [`Referral::campaign`].
/// - `fbclid`, `gclid`, `gbraid`, `wbraid`, `ttclid`, `msclkid`, `li_fat_id`, `ctwa_clid`
///   go to [`Referral::click_ids`].
/// - The source is [`ReferralSource::Ad`] when a paid click id (all of the above except
///   `fbclid` and `ctwa_clid`) is present or `utm_medium` is a paid medium (`cpc`, `ppc`,
///   `paid`, `paid_social`, `paidsocial`, `ad`, `ads`, `display`, `cpm`), otherwise
///   [`ReferralSource::Link`].
///
/// Returns `None` when the URL carries none of these and there is no referrer. Parameters
/// are percent-decoded; empty values are ignored; the first occurrence of a name wins.
pub fn referral_from_url(url: &str, referrer: Option<&str>) -> Option<Referral> {
    let referrer = referrer.map(str::trim).filter(|r| !r.is_empty());
    // Borrowed from `url` unless percent-decoded: no `String` per parameter, one per
    // value kept.
    let params = url_query(url);
    let first = |name: &str| {
        params
            .iter()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value)
    };
    let first_utm = |name: &str| {
        params
            .iter()
            .find(|(key, value)| key.strip_prefix("utm_") == Some(name) && !value.is_empty())
            .map(|(_, value)| value)
    };

    let utm: Vec<Pair> = UTM
        .iter()
        .filter_map(|name| {
            first_utm(name).map(|value| Pair {
                name: (*name).into(),
                value: value.as_ref().to_owned(),
            })
        })
        .collect();
    let click_ids: Vec<Pair> = CLICK_IDS
        .iter()
        .filter_map(|name| {
            first(name).map(|value| Pair {
                name: (*name).into(),
                value: value.as_ref().to_owned(),
            })
        })
        .collect();
    if utm.is_empty() && click_ids.is_empty() && referrer.is_none() {
        return None;
    }

    let paid_click = click_ids
        .iter()
        .any(|p| PAID_CLICK_IDS.contains(&p.name.as_str()));
    let paid_medium = first_utm("medium")
        .is_some_and(|m| PAID_MEDIUMS.iter().any(|paid| m.eq_ignore_ascii_case(paid)));
    Some(Referral {
        source: if paid_click || paid_medium {
            ReferralSource::Ad
        } else {
            ReferralSource::Link
        },
        ad_id: None,
        campaign: first_utm("campaign").map(|value| value.as_ref().to_owned()),
        click_ids,
        utm,
        url: Some(url.to_owned()),
        referrer: referrer.map(str::to_owned),
        ref_payload: None,
        headline: None,
        body: None,
        media_url: None,
    })
}

/// The decoded query parameters of `url` (between `?` and `#`), borrowed where nothing
/// had to be decoded.
fn url_query(url: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    let without_fragment = url.split_once('#').map_or(url, |(before, _)| before);
    match without_fragment.split_once('?') {
        Some((_, query)) => form_urlencoded::parse(query.as_bytes()).collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[Pair]) -> Vec<(&str, &str)> {
        list.iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect()
    }

    #[test]
    fn utm_and_fbclid_from_instagram_is_a_link() {
        let url = "https://shop.example/p?utm_source=instagram&utm_campaign=bf25&fbclid=abc";
        let r = referral_from_url(url, Some("https://l.instagram.com/")).expect("referral");
        assert_eq!(r.source, ReferralSource::Link);
        assert_eq!(r.campaign.as_deref(), Some("bf25"));
        assert_eq!(
            pairs(&r.utm),
            vec![("source", "instagram"), ("campaign", "bf25")]
        );
        assert_eq!(pairs(&r.click_ids), vec![("fbclid", "abc")]);
        assert_eq!(r.url.as_deref(), Some(url));
        assert_eq!(r.referrer.as_deref(), Some("https://l.instagram.com/"));
    }

    #[test]
    fn paid_click_ids_and_mediums_make_an_ad() {
        let gclid = referral_from_url("https://a.example/?gclid=Cj0K%3D%3D", None).expect("r");
        assert_eq!(gclid.source, ReferralSource::Ad);
        assert_eq!(pairs(&gclid.click_ids), vec![("gclid", "Cj0K==")]);
        for medium in ["cpc", "Paid_Social", "display"] {
            let url = format!("https://a.example/landing?utm_medium={medium}&utm_source=fb");
            let r = referral_from_url(&url, None).expect("r");
            assert_eq!(r.source, ReferralSource::Ad, "{medium}");
        }
        let email = referral_from_url("https://a.example/?utm_medium=email", None).expect("r");
        assert_eq!(email.source, ReferralSource::Link);
    }

    #[test]
    fn decodes_and_ignores_fragment_and_empty_values() {
        let url = "https://a.example/p?utm_campaign=black%20friday+25&utm_term=&x=1#utm_source=no";
        let r = referral_from_url(url, None).expect("r");
        assert_eq!(pairs(&r.utm), vec![("campaign", "black friday 25")]);
    }

    #[test]
    fn none_without_parameters_or_referrer() {
        assert!(referral_from_url("https://a.example/p?x=1", None).is_none());
        assert!(referral_from_url("https://a.example/p", Some("  ")).is_none());
        assert!(referral_from_url("not a url", None).is_none());
        let direct = referral_from_url("https://a.example/p", Some("https://google.com/"));
        let direct = direct.expect("a referrer alone is a referral");
        assert_eq!(direct.source, ReferralSource::Link);
        assert!(direct.utm.is_empty() && direct.click_ids.is_empty());
    }
}
