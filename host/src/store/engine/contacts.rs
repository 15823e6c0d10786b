//! Changes and reads of contacts within one change: who sent an event, the sender's
//! details, merges, their undoing, erasure and the contact's details. What each of
//! them decides is [`rules`]; this is where it is read and written.

use std::borrow::Cow;

use jiff::Timestamp;

use super::keys;
use super::records::{ContactDoc, Doc};
use super::threads;
use super::tx::{Tx, not_found};
use crate::event::Handle;
use crate::store::StoreError;
use crate::store::model::{
    ContactDetails, Erased, Ingest, LinkStrength, Merge, Person, ProbableLink, merges_on,
    probable_keys, shared_handle_evidence,
};
use crate::store::rules;

/// The contact owning the sender's channel user id, else one of its verified
/// phones/e-mails; else `new_id`, which claims the channel user id (two first messages
/// of one new sender at once: one commit wins, the other reads the claim again).
pub async fn sender(tx: &mut Tx<'_>, person: &Person, new_id: &str) -> Result<String, StoreError> {
    let handles = std::iter::once(&person.user).chain(person.handles.iter().filter(|h| h.verified));
    for handle in handles {
        if let Some(owner) = tx.id(&keys::handle(handle)).await? {
            return Ok(owner);
        }
    }
    tx.put(keys::handle(&person.user), Doc::Id(new_id.to_owned()));
    Ok(new_id.to_owned())
}

/// Record the sender's name and handles on contact `id` (read first), and index them:
/// its probable-link keys, and the handles that identify it (first claim wins).
pub async fn add_person(tx: &mut Tx<'_>, id: &str, person: &Person) -> Result<(), StoreError> {
    let Some(doc) = tx.contact(id) else {
        return Ok(());
    };
    let listed: Vec<String> = probable_keys(person.name.as_deref(), &person.handles)
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| !doc.probable.contains(key))
        .collect();
    // A known sender usually adds nothing: the contact is copied only when it does.
    let mut contact = Cow::Borrowed(&doc.contact);
    let changed = rules::person_added(&mut contact, person).then(|| contact.into_owned());
    let changes = changed.is_some() || !listed.is_empty();
    if changes && let Some(doc) = tx.contact_mut(id) {
        if let Some(contact) = changed {
            doc.contact = contact;
        }
        doc.probable.extend(listed.iter().cloned());
    }
    for key in listed {
        tx.put(keys::probable(&key, id), Doc::Mark);
    }
    for handle in std::iter::once(&person.user).chain(&person.handles) {
        if rules::identifies(handle) {
            let key = keys::handle(handle);
            if tx.id(&key).await?.is_none() {
                tx.put(key, Doc::Id(id.to_owned()));
            }
        }
    }
    Ok(())
}

/// A verified phone/e-mail the sender reports that another contact owns, with that
/// owner: the merge it causes ([`merge_on_shared_handle`]).
pub async fn shared_owner<'i>(
    tx: &mut Tx<'_>,
    sender: &str,
    ingest: &'i Ingest,
) -> Result<Option<(&'i Handle, String)>, StoreError> {
    for handle in ingest
        .person
        .handles
        .iter()
        .filter(|handle| merges_on(handle))
    {
        if let Some(owner) = tx.id(&keys::handle(handle)).await?
            && owner != sender
        {
            return Ok(Some((handle, owner)));
        }
    }
    Ok(None)
}

/// Merge the sender (contact `sender`, read first) into `owner`, which owns a verified
/// handle the sender reports, unless a merge of the two was undone before (an operator
/// separated them: a handle they share must not join them again). A merge the records
/// refuse is logged and skipped: the event is still recorded, on the sender's contact.
pub async fn merge_on_shared_handle(
    tx: &mut Tx<'_>,
    sender: &str,
    (handle, owner): (&Handle, &str),
    ingest: &Ingest,
) -> Result<Option<Merge>, StoreError> {
    tx.load_contact(owner).await?;
    if unmerged_before(tx, owner, sender) || unmerged_before(tx, sender, owner) {
        return Ok(None);
    }
    let evidence = shared_handle_evidence(handle, &ingest.channel);
    match merge(tx, owner, sender, &evidence, ingest.at).await {
        Ok(merge) => Ok(Some(merge)),
        Err(StoreError::Unavailable(why)) => Err(StoreError::Unavailable(why)),
        Err(error) => {
            tracing::warn!(%error, survivor = %owner, absorbed = %sender, "contacts sharing a verified handle not merged");
            Ok(None)
        }
    }
}

/// Whether a merge of `absorbed` into `survivor` (both read) was undone.
fn unmerged_before(tx: &Tx<'_>, survivor: &str, absorbed: &str) -> bool {
    tx.contact(survivor).is_some_and(|doc| {
        doc.merges
            .iter()
            .any(|merge| merge.absorbed == absorbed && merge.undone_at.is_some())
    })
}

/// Merge `absorbed` into `survivor` ([`rules::merge`]): the absorbed contact's handles
/// point at the survivor. Merging again returns the live merge.
pub async fn merge(
    tx: &mut Tx<'_>,
    survivor: &str,
    absorbed: &str,
    evidence: &str,
    at: Timestamp,
) -> Result<Merge, StoreError> {
    let (has_survivor, has_absorbed) = (
        tx.load_contact(survivor).await?,
        tx.load_contact(absorbed).await?,
    );
    let (Some(target), Some(source), true, true) = (
        tx.contact(survivor).cloned(),
        tx.contact(absorbed).cloned(),
        has_survivor,
        has_absorbed,
    ) else {
        let missing = if has_survivor { absorbed } else { survivor };
        return Err(not_found("contact", missing));
    };
    let merge = match rules::merge(side(&target), &target.merges, side(&source), evidence, at)? {
        rules::Merging::Existing(merge) => return Ok(merge.clone()),
        rules::Merging::New(merge) => merge,
    };
    // Every handle the absorbed contact owns is on its list of handles.
    for handle in source
        .contact
        .handles
        .iter()
        .filter(|h| rules::identifies(h))
    {
        let key = keys::handle(handle);
        if tx.id(&key).await?.as_deref() == Some(absorbed) {
            tx.put(key, Doc::Id(survivor.to_owned()));
        }
    }
    if let Some(target) = tx.contact_mut(survivor) {
        rules::absorb(&mut target.contact, &merge);
        target.merges.push(merge.clone());
    }
    if let Some(source) = tx.contact_mut(absorbed) {
        source.merged_into = Some(survivor.to_owned());
    }
    Ok(merge)
}

/// One side of a merge as stored.
fn side(doc: &ContactDoc) -> rules::Side<'_> {
    rules::Side {
        contact: &doc.contact,
        merged_into: doc.merged_into.as_deref(),
    }
}

/// Undo the live merge of `absorbed` into `survivor`: its handles point at it again.
pub async fn unmerge(
    tx: &mut Tx<'_>,
    survivor: &str,
    absorbed: &str,
    at: Timestamp,
) -> Result<Merge, StoreError> {
    tx.load_contact(survivor).await?;
    tx.load_contact(absorbed).await?;
    let merge = tx
        .contact_mut(survivor)
        .and_then(|doc| {
            doc.merges
                .iter_mut()
                .find(|merge| rules::is_live_merge_of(merge, absorbed))
        })
        .map(|merge| {
            merge.undone_at = Some(at);
            merge.clone()
        })
        .ok_or_else(|| not_found("merge", &format!("{absorbed} into {survivor}")))?;
    for handle in &merge.handles {
        let key = keys::handle(handle);
        if tx.id(&key).await?.as_deref() == Some(survivor) {
            tx.put(key, Doc::Id(absorbed.to_owned()));
        }
    }
    if let Some(doc) = tx.contact_mut(survivor) {
        rules::separate(&mut doc.contact, &merge);
    }
    if let Some(doc) = tx.contact_mut(absorbed) {
        doc.merged_into = None;
    }
    Ok(merge)
}

/// Contact `id` with its merges, conversations and probable links.
pub async fn details(tx: &mut Tx<'_>, id: &str) -> Result<Option<ContactDetails>, StoreError> {
    if !tx.load_contact(id).await? {
        return Ok(None);
    }
    let Some(doc) = tx.contact(id).cloned() else {
        return Ok(None);
    };
    let mut conversations = doc.conversations.clone();
    for merge in doc.merges.iter().filter(|merge| merge.undone_at.is_none()) {
        tx.load_contact(&merge.absorbed).await?;
        if let Some(absorbed) = tx.contact(&merge.absorbed) {
            conversations.extend(absorbed.conversations.iter().cloned());
        }
    }
    let probable_links = probable_links(tx, &doc).await?;
    Ok(Some(ContactDetails {
        merged_into: doc.merged_into,
        probable_links,
        merges: doc.merges,
        conversations,
        latest_conversation: doc.latest,
        contact: doc.contact,
    }))
}

/// Other contacts listed under the contact's probable-link keys, not merged with it.
async fn probable_links(
    tx: &mut Tx<'_>,
    doc: &ContactDoc,
) -> Result<Vec<ProbableLink>, StoreError> {
    let contact = &doc.contact;
    let mut links: Vec<ProbableLink> = Vec::new();
    for (key, evidence) in probable_keys(contact.name.as_deref(), &contact.handles) {
        let prefix = keys::probable_members(&key);
        for (member, _) in tx.scan(&prefix).await? {
            let other = member[prefix.len()..].to_owned();
            let merged = doc
                .merges
                .iter()
                .any(|merge| rules::is_live_merge_of(merge, &other))
                || doc.merged_into.as_deref() == Some(other.as_str());
            if other != contact.id
                && !merged
                && !links.iter().any(|link| link.contact_id == other)
                && tx.load_contact(&other).await?
            {
                links.push(ProbableLink {
                    contact_id: other,
                    strength: LinkStrength::Probable,
                    evidence: evidence.clone(),
                });
            }
        }
    }
    Ok(links)
}

/// Remove contact `id` and the contacts merged into it: their handles, conversations
/// (with their messages, timelines and outcome index entries) and merges. Link tokens
/// and owed records are the caller's.
pub async fn erase(tx: &mut Tx<'_>, id: &str) -> Result<Option<Erased>, StoreError> {
    let Some(details) = details(tx, id).await? else {
        return Ok(None);
    };
    let latest = match &details.latest_conversation {
        Some(latest) if tx.load_thread(latest).await? => {
            tx.thread(latest).map(|thread| thread.conversation.clone())
        }
        _ => None,
    };
    let absorbed = details.live_absorbed();
    for contact in std::iter::once(id).chain(absorbed.iter().map(String::as_str)) {
        tx.load_contact(contact).await?;
        let Some(doc) = tx.contact(contact).cloned() else {
            continue;
        };
        for handle in &doc.contact.handles {
            let key = keys::handle(handle);
            if tx.id(&key).await?.as_deref() == Some(contact) {
                tx.delete(key);
            }
        }
        for conversation in &doc.conversations {
            forget_conversation(tx, conversation).await?;
        }
        for key in &doc.probable {
            tx.delete(keys::probable(key, contact));
        }
        tx.remove_contact(contact);
    }
    Ok(Some(Erased {
        contact_id: id.to_owned(),
        absorbed,
        conversations: details.conversations,
        latest,
    }))
}

/// Remove conversation `id` with everything kept of it.
async fn forget_conversation(tx: &mut Tx<'_>, id: &str) -> Result<(), StoreError> {
    if !tx.load_thread(id).await? {
        return Ok(());
    }
    let Some(thread) = tx.thread(id).cloned() else {
        return Ok(());
    };
    threads::delete_all(tx, id, (thread.history, thread.timeline));
    tx.delete(keys::open(id));
    if let Some(key) = thread.started_key {
        tx.delete(key);
    }
    let due_of = keys::due_of(id);
    if let Some(doc) = tx.get(&due_of).await?
        && let Doc::At { ms, .. } = &*doc
    {
        tx.delete(keys::due(*ms, id));
        tx.delete(due_of);
    }
    tx.remove_thread(id);
    Ok(())
}
