//! Every contact shard locked at once, in order: the view for changes that join or
//! remove several contacts (merges, their undoing, erasure) and for reads that follow
//! merges across contacts. These are rare; locking everything keeps each one atomic
//! without a lock order between two contacts' shards.

use jiff::Timestamp;
use parking_lot::MutexGuard;

use super::index::{Index, shard_of};
use super::shard::Shard;
use crate::event::Handle;
use crate::store::StoreError;
use crate::store::model::{
    Contact, ContactDetails, Erased, Ingest, LinkStrength, Merge, ProbableLink, probable_keys,
    shared_handle_evidence,
};
use crate::store::rules;

/// Every shard, locked.
pub(super) struct AllShards<'a> {
    shards: Vec<MutexGuard<'a, Shard>>,
}

impl<'a> AllShards<'a> {
    /// Lock `shards`, in order.
    pub(super) fn lock(shards: &'a [parking_lot::Mutex<Shard>]) -> Self {
        Self {
            shards: shards.iter().map(parking_lot::Mutex::lock).collect(),
        }
    }

    /// The shard of contact `id`.
    pub(super) fn of(&mut self, id: &str) -> &mut Shard {
        let count = self.shards.len();
        &mut self.shards[shard_of(id, count)]
    }

    /// The shard of contact `id`, to read.
    pub(super) fn get(&self, id: &str) -> &Shard {
        &self.shards[shard_of(id, self.shards.len())]
    }

    /// Contact `id`.
    pub(super) fn contact(&self, id: &str) -> Option<&Contact> {
        self.get(id).contacts.get(id)
    }

    /// The merges into `survivor` (undone ones included).
    fn merges_into(&self, survivor: &str) -> &[Merge] {
        self.get(survivor)
            .merges
            .get(survivor)
            .map_or(&[], Vec::as_slice)
    }

    /// Whether a merge between `a` and `b` (either way) was undone.
    pub(super) fn unmerged_before(&self, a: &str, b: &str) -> bool {
        let undone = |survivor: &str, absorbed: &str| {
            self.get(survivor)
                .merges
                .get(survivor)
                .is_some_and(|merges| {
                    merges
                        .iter()
                        .any(|merge| merge.absorbed == absorbed && merge.undone_at.is_some())
                })
        };
        undone(a, b) || undone(b, a)
    }

    /// When the sender (contact `sender`) reports a verified phone/e-mail that `owner`
    /// owns, merge the sender into that owner, unless a merge of the two was undone
    /// before (an operator separated them: a handle they share must not join them
    /// again). A merge the records refuse is logged and skipped: the event is still
    /// recorded, on the sender's contact.
    pub(super) fn merge_on_shared_handle(
        &mut self,
        index: &Index,
        sender: &str,
        (handle, owner): (&Handle, &str),
        ingest: &Ingest,
    ) -> Option<Merge> {
        // A merge between the lookup and these locks may have moved the handle.
        if index.owner(handle).as_deref() != Some(owner) || self.unmerged_before(owner, sender) {
            return None;
        }
        let evidence = shared_handle_evidence(handle, &ingest.channel);
        match self.merge(index, owner, sender, &evidence, ingest.at) {
            Ok(merge) => Some(merge),
            Err(error) => {
                tracing::warn!(%error, survivor = %owner, absorbed = %sender, "contacts sharing a verified handle not merged");
                None
            }
        }
    }

    /// Merge `absorbed` into `survivor` ([`rules::merge`]): the absorbed contact's
    /// handles point at the survivor. Merging again returns the live merge.
    pub(super) fn merge(
        &mut self,
        index: &Index,
        survivor: &str,
        absorbed: &str,
        evidence: &str,
        at: Timestamp,
    ) -> Result<Merge, StoreError> {
        let (Some(target), Some(source)) = (self.contact(survivor), self.contact(absorbed)) else {
            let missing = if self.contact(survivor).is_some() {
                absorbed
            } else {
                survivor
            };
            return Err(super::not_found("contact", missing));
        };
        let side = |contact| rules::Side {
            contact,
            merged_into: self
                .get(&contact.id)
                .merged_into
                .get(&contact.id)
                .map(String::as_str),
        };
        let merge = match rules::merge(
            side(target),
            self.merges_into(survivor),
            side(source),
            evidence,
            at,
        )? {
            rules::Merging::Existing(merge) => return Ok(merge.clone()),
            rules::Merging::New(merge) => merge,
        };
        // Every handle the absorbed contact owns is on its list of handles.
        let owned: Vec<Handle> = source
            .handles
            .iter()
            .filter(|handle| rules::identifies(handle))
            .cloned()
            .collect();
        for handle in &owned {
            index.repoint(handle, absorbed, survivor);
        }
        if let Some(target) = self.of(survivor).contacts.get_mut(survivor) {
            rules::absorb(target, &merge);
        }
        self.of(absorbed)
            .merged_into
            .insert(absorbed.to_owned(), survivor.to_owned());
        self.of(survivor)
            .merges
            .entry(survivor.to_owned())
            .or_default()
            .push(merge.clone());
        Ok(merge)
    }

    /// Undo the live merge of `absorbed` into `survivor`.
    pub(super) fn unmerge(
        &mut self,
        index: &Index,
        survivor: &str,
        absorbed: &str,
        at: Timestamp,
    ) -> Result<Merge, StoreError> {
        let merge = self
            .of(survivor)
            .merges
            .get_mut(survivor)
            .and_then(|merges| {
                merges
                    .iter_mut()
                    .find(|merge| rules::is_live_merge_of(merge, absorbed))
            })
            .ok_or_else(|| super::not_found("merge", &format!("{absorbed} into {survivor}")))?;
        merge.undone_at = Some(at);
        let merge = merge.clone();
        for handle in &merge.handles {
            index.repoint(handle, survivor, absorbed);
        }
        if let Some(target) = self.of(survivor).contacts.get_mut(survivor) {
            rules::separate(target, &merge);
        }
        self.of(absorbed).merged_into.remove(absorbed);
        Ok(merge)
    }

    /// Remove contact `id` and the contacts merged into it: their handles, conversations
    /// and merges. Link tokens and owed records are the caller's.
    pub(super) fn erase(&mut self, index: &Index, id: &str) -> Option<Erased> {
        let details = self.details(index, id)?;
        let latest = {
            let shard = self.get(id);
            shard
                .latest
                .get(id)
                .and_then(|cv| shard.conversations.get(cv))
                .map(|thread| thread.conversation.clone())
        };
        let absorbed = details.live_absorbed();
        for contact in std::iter::once(id).chain(absorbed.iter().map(String::as_str)) {
            let shard = self.of(contact);
            if let Some(gone) = shard.contacts.remove(contact) {
                for handle in &gone.handles {
                    index.release(handle, contact);
                }
            }
            for conversation in shard.owned.remove(contact).unwrap_or_default() {
                shard.conversations.remove(&conversation);
                index.forget_conversation(&conversation);
            }
            shard.latest.remove(contact);
            shard.merges.remove(contact);
            shard.merged_into.remove(contact);
            index.forget_probable(contact);
        }
        Some(Erased {
            contact_id: id.to_owned(),
            absorbed,
            conversations: details.conversations,
            latest,
        })
    }

    /// Contact `id` with its merges, conversations and probable links.
    pub(super) fn details(&self, index: &Index, id: &str) -> Option<ContactDetails> {
        let shard = self.get(id);
        let contact = shard.contacts.get(id)?.clone();
        let merges = shard.merges.get(id).cloned().unwrap_or_default();
        let mut conversations = shard.owned.get(id).cloned().unwrap_or_default();
        for merge in merges.iter().filter(|merge| merge.undone_at.is_none()) {
            let absorbed = &merge.absorbed;
            conversations.extend(
                self.get(absorbed)
                    .owned
                    .get(absorbed)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        let probable_links = self.probable_links(index, &contact, &merges);
        Some(ContactDetails {
            merged_into: shard.merged_into.get(id).cloned(),
            probable_links,
            merges,
            conversations,
            latest_conversation: shard.latest.get(id).cloned(),
            contact,
        })
    }

    fn probable_links(
        &self,
        index: &Index,
        contact: &Contact,
        merges: &[Merge],
    ) -> Vec<ProbableLink> {
        let merged_into = self.get(&contact.id).merged_into.get(&contact.id);
        let mut links: Vec<ProbableLink> = Vec::new();
        for (key, evidence) in probable_keys(contact.name.as_deref(), &contact.handles) {
            for other in index.probable(&key) {
                let merged = merges
                    .iter()
                    .any(|merge| rules::is_live_merge_of(merge, &other))
                    || merged_into == Some(&other);
                if other != contact.id
                    && !merged
                    && self.contact(&other).is_some()
                    && !links.iter().any(|link| link.contact_id == other)
                {
                    links.push(ProbableLink {
                        contact_id: other,
                        strength: LinkStrength::Probable,
                        evidence: evidence.clone(),
                    });
                }
            }
        }
        links
    }
}
