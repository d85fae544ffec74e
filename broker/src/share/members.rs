//! The share groups a shard coordinates: heartbeats, expiry and descriptions, on the
//! shard that owns the group id's `__consumer_offsets` partition.

use kafka_protocol::ResponseError;

use super::group::{Beat, BeatAnswer, BeatError, ShareGroup};
use super::GroupSettings;
use crate::shard::Shard;

impl Shard {
    /// One ShareGroupHeartbeat. A group id a classic group uses is refused
    /// (GROUP_ID_NOT_FOUND, as Kafka answers for a group of another type).
    pub fn share_heartbeat(&self, group_id: &str, beat: Beat) -> Result<BeatAnswer, ResponseError> {
        if self.groups.describe(group_id).state != "Dead" {
            return Err(ResponseError::GroupIdNotFound);
        }
        let metadata = self.metadata();
        let settings = GroupSettings::resolve(self.config(), &metadata, group_id);
        let partitions = |topic: &str| metadata.topic(topic).map(|t| t.partitions);
        let mut groups = self.share_groups.borrow_mut();
        let group = groups
            .entry(group_id.to_string())
            .or_insert_with(|| ShareGroup::new(group_id));
        let size_max = self.config().group_share_max_size;
        group
            .heartbeat_within(
                beat,
                crate::now_ms(),
                settings.session_timeout_ms as i64,
                size_max,
                &partitions,
            )
            .map_err(|e| match e {
                BeatError::UnknownMemberId => ResponseError::UnknownMemberId,
                BeatError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
                BeatError::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
                BeatError::InvalidRequest => ResponseError::InvalidRequest,
            })
    }

    /// Removes share-group members whose session ran out.
    pub fn expire_share_members(&self) {
        let metadata = self.metadata();
        let partitions = |topic: &str| metadata.topic(topic).map(|t| t.partitions);
        let now = crate::now_ms();
        for group in self.share_groups.borrow_mut().values_mut() {
            for member in group.expire(now, &partitions) {
                tracing::info!(group = %group.group_id, member, "share-group member's session expired");
            }
        }
    }

    /// A share group as it stands, if this shard coordinates it.
    pub fn share_group(&self, group_id: &str) -> Option<ShareGroup> {
        self.share_groups.borrow().get(group_id).cloned()
    }

    /// Every share group this shard coordinates: (group id, state).
    pub fn share_group_list(&self) -> Vec<(String, &'static str)> {
        self.share_groups
            .borrow()
            .values()
            .map(|g| (g.group_id.clone(), g.state()))
            .collect()
    }
}
