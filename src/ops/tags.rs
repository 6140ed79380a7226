//! Tags: TagResource, UntagResource, ListResourceTags.

use std::sync::Arc;

use super::paging::{self, Page};
use super::{refuse_pending_deletion, Access, Kms};
use crate::audit::AuditEvent;
use crate::error::Result;
use crate::keys::key_ref::{check_key_id_length, Accept};
use crate::keys::names::{self, MAX_TAGS_PER_KEY};
use crate::keys::Tag;

impl Kms {
    pub async fn tag_resource(&self, key_id: &str, tags: Vec<Tag>, ev: &mut AuditEvent) -> Result<()> {
        check_key_id_length("keyId", key_id)?;
        names::tags(&tags)?;
        let access = Access::new("kms:TagResource").request_tags(&tags);
        let key = self.resolve(access, "keyId", key_id, Accept::KeyOnly, ev).await?;
        refuse_pending_deletion(&self.key_arn(&key.key_id), &key)?;
        let id = key.key_id.clone();
        self.write(ev, move |s| s.tag_key(&id, &tags, MAX_TAGS_PER_KEY), {
            let id = key.key_id.clone();
            move |k| k.key_tags.invalidate(&id)
        })
        .await
    }

    pub async fn untag_resource(&self, key_id: &str, tag_keys: Vec<String>, ev: &mut AuditEvent) -> Result<()> {
        check_key_id_length("keyId", key_id)?;
        names::untag_keys(&tag_keys)?;
        let access = Access::new("kms:UntagResource").tag_keys(&tag_keys);
        let key = self.resolve(access, "keyId", key_id, Accept::KeyOnly, ev).await?;
        refuse_pending_deletion(&self.key_arn(&key.key_id), &key)?;
        let id = key.key_id.clone();
        self.write(ev, move |s| s.untag_key(&id, &tag_keys), {
            let id = key.key_id.clone();
            move |k| k.key_tags.invalidate(&id)
        })
        .await
    }

    /// The key's tags: the aws:ResourceTag/<key> condition keys. Read only for policies that use
    /// them, and cached until TagResource or UntagResource changes them.
    pub(super) async fn resource_tags(&self, key_id: &str) -> Result<Arc<[Tag]>> {
        let load = async {
            let owned = key_id.to_string();
            Ok(self
                .store(move |s| s.list_tags(&owned, None, usize::MAX >> 1))
                .await?
                .into())
        };
        self.key_tags.get_or_load(key_id, load).await
    }

    pub async fn list_resource_tags(
        &self,
        key_id: &str,
        limit: Option<i32>,
        marker: Option<&str>,
        ev: &mut AuditEvent,
    ) -> Result<Page<Tag>> {
        let limit = paging::limit(limit, 50, 50)?;
        check_key_id_length("keyId", key_id)?;
        let listing = paging::Listing::new("ListResourceTags", &[Some(&self.scope.listed_key(key_id))]);
        let after = paging::decode_marker(&listing, marker)?;
        let key = self
            .resolve(
                Access::new("kms:ListResourceTags"),
                "keyId",
                key_id,
                Accept::KeyOnly,
                ev,
            )
            .await?;
        let id = key.key_id.clone();
        let items = self
            .store(move |s| s.list_tags(&id, after.as_deref(), limit + 1))
            .await?;
        Ok(paging::page(items, limit, &listing, |t| &t.key))
    }
}
