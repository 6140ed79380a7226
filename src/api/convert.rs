//! Domain values as proto messages.

use crate::keys::key_ref::ArnScope;
use crate::keys::{AliasRecord, KeyRecord, KeyState, Tag};
use crate::proto as pb;

pub fn key_metadata(scope: &ArnScope, k: &KeyRecord) -> pb::KeyMetadata {
    pb::KeyMetadata {
        aws_account_id: scope.account.clone(),
        key_id: k.key_id.clone(),
        arn: scope.key_arn(&k.key_id),
        creation_date: k.creation_date,
        enabled: k.state == KeyState::Enabled,
        description: k.description.clone(),
        key_usage: k.key_usage.as_str().into(),
        key_state: k.state.as_str().into(),
        deletion_date: k.deletion_date,
        origin: k.origin.as_str().into(),
        key_manager: "CUSTOMER".into(),
        customer_master_key_spec: k.key_spec.as_str().into(),
        key_spec: k.key_spec.as_str().into(),
        encryption_algorithms: names(k.key_spec.encryption_algorithms(k.key_usage).iter().map(|a| a.as_str())),
        signing_algorithms: names(k.key_spec.signing_algorithms(k.key_usage).iter().map(|a| a.as_str())),
        mac_algorithms: names(k.key_spec.mac_algorithms().iter().map(|a| a.as_str())),
        multi_region: false,
        // AWS gives it only for a multi-Region primary key waiting for its replicas
        // (PendingReplicaDeletion); a single-Region key pending deletion has DeletionDate only.
        pending_deletion_window_in_days: None,
    }
}

pub fn names<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    items.map(str::to_string).collect()
}

pub fn alias_entry(scope: &ArnScope, a: AliasRecord) -> pb::AliasListEntry {
    pb::AliasListEntry {
        alias_arn: scope.alias_arn(&a.name),
        alias_name: a.name,
        target_key_id: a.target_key_id,
        creation_date: a.creation_date,
        last_updated_date: a.last_updated_date,
    }
}

pub fn tags_in(tags: Vec<pb::Tag>) -> Vec<Tag> {
    tags.into_iter()
        .map(|t| Tag {
            key: t.tag_key,
            value: t.tag_value,
        })
        .collect()
}

pub fn tags_out(tags: Vec<Tag>) -> Vec<pb::Tag> {
    tags.into_iter()
        .map(|t| pb::Tag {
            tag_key: t.key,
            tag_value: t.value,
        })
        .collect()
}
