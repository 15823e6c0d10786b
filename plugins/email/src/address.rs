//! Mail addresses as providers give them: `addr`, `Name <addr>`, `"Last, First" <addr>`,
//! and comma-separated lists of those; message ids in `<…>`.
//!
//! Only the parts the plugin needs (the address, the display name, the plus detail) are
//! read: a full RFC 5322 parser (comments, groups, encoded words) would be far more code
//! than these provider-normalized header values need.

/// One mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The display name, unquoted, if any.
    pub name: Option<String>,
    /// The address, lowercased.
    pub email: String,
}

/// Parses one mailbox; `None` when there is no `local@domain` in it.
pub fn mailbox(raw: &str) -> Option<Mailbox> {
    let raw = raw.trim();
    let (name, email) = match (raw.rfind('<'), raw.rfind('>')) {
        (Some(open), Some(close)) if open < close => (Some(&raw[..open]), &raw[open + 1..close]),
        _ => (None, raw),
    };
    let email = email.trim().to_ascii_lowercase();
    let (local, domain) = email.split_once('@')?;
    if local.is_empty() || domain.is_empty() || email.contains(char::is_whitespace) {
        return None;
    }
    let name = name
        .map(|name| name.trim().trim_matches('"').trim().to_owned())
        .filter(|name| !name.is_empty());
    Some(Mailbox { name, email })
}

/// Every mailbox of a comma-separated list (commas inside quotes or `<…>` do not split).
pub fn mailboxes(raw: &str) -> Vec<Mailbox> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut angled = false;
    for (at, c) in raw.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angled = true,
            '>' if !quoted => angled = false,
            ',' if !quoted && !angled => {
                out.extend(mailbox(&raw[start..at]));
                start = at + 1;
            }
            _ => {}
        }
    }
    out.extend(mailbox(&raw[start..]));
    out
}

/// The plus detail of an address (`support+lk-7h2k9x4m1p@shop.example` →
/// `lk-7h2k9x4m1p`), if any.
pub fn plus_detail(email: &str) -> Option<&str> {
    let (local, _) = email.split_once('@')?;
    let (_, detail) = local.split_once('+')?;
    (!detail.is_empty()).then_some(detail)
}

/// The message ids in a `Message-ID`, `In-Reply-To` or `References` value, without
/// their angle brackets, in order.
pub fn message_ids(raw: &str) -> Vec<String> {
    let bracketed: Vec<String> = raw
        .split('<')
        .skip(1)
        .filter_map(|piece| piece.split_once('>'))
        .map(|(id, _)| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .collect();
    if !bracketed.is_empty() {
        return bracketed;
    }
    // Some providers give a bare id.
    raw.split_whitespace().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes_in_their_usual_forms() {
        assert_eq!(
            mailbox("Ana Ruiz <Ana@Example.com>"),
            Some(Mailbox {
                name: Some("Ana Ruiz".into()),
                email: "ana@example.com".into()
            })
        );
        assert_eq!(mailbox("ana@example.com").map(|m| m.name), Some(None));
        assert_eq!(mailbox("not an address"), None);
        let list =
            mailboxes(r#""Ruiz, Ana" <ana@example.com>, support+lk-7h2k9x4m1p@shop.example"#);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name.as_deref(), Some("Ruiz, Ana"));
        assert_eq!(plus_detail(&list[1].email), Some("lk-7h2k9x4m1p"));
        assert_eq!(plus_detail("support@shop.example"), None);
    }

    #[test]
    fn message_ids_lose_their_brackets() {
        assert_eq!(
            message_ids("<a@x> <b@y>\r\n <c@z>"),
            vec!["a@x".to_owned(), "b@y".into(), "c@z".into()]
        );
        assert_eq!(message_ids("bare@id"), vec!["bare@id".to_owned()]);
        assert!(message_ids("").is_empty());
    }
}
