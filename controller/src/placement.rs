//! Where a new partition's replicas go (Kafka's replica assignor, as documented for
//! `CreateTopics` and `kafka-reassign-partitions`): the first replicas (the preferred
//! leaders) of consecutive partitions go round the brokers from a random start, so
//! leadership spreads evenly; each further replica is shifted by an amount that grows
//! every full round, so followers spread too. With racks, the brokers are taken in an
//! order that alternates racks, and a partition's replicas use every rack before any
//! rack twice.

use std::collections::{BTreeMap, BTreeSet};

use crate::{BrokerInfo, ControllerError};

/// Most partitions one topic may have. Every partition costs a state in every broker's
/// metadata snapshot and a key in etcd, so an untrusted count must be bounded before
/// anything is allocated for it; Kafka's own practical limit per cluster is about
/// 200,000 partitions.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 100_000;

/// Where a placement starts; random in a broker, fixed in tests.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    pub index: usize,
    pub shift: usize,
}

impl Start {
    pub fn random(brokers: usize) -> Start {
        let n = brokers.max(1);
        Start {
            index: rand::random_range(0..n),
            shift: rand::random_range(0..n),
        }
    }
}

/// Replicas for partitions `first..first + count` of a topic, over the live `brokers`.
pub fn assign(
    brokers: &BTreeMap<i32, BrokerInfo>,
    first: i32,
    count: i32,
    replication_factor: i16,
    start: Start,
) -> Result<Vec<Vec<i32>>, ControllerError> {
    if count < 0 || first.saturating_add(count) > PARTITIONS_PER_TOPIC_MAX {
        return Err(ControllerError::InvalidPartitions(first.saturating_add(count)));
    }
    let rf = usize::try_from(replication_factor).unwrap_or(0);
    if rf == 0 || rf > brokers.len() {
        return Err(ControllerError::InvalidReplicationFactor(
            replication_factor,
            brokers.len(),
        ));
    }
    let order = rack_alternated(brokers);
    let racks: BTreeSet<Option<&str>> = order.iter().map(|b| b.rack.as_deref()).collect();
    let n = order.len();
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut shift = start.shift;
    for partition in first.max(0)..first.max(0) + count {
        let p = partition as usize;
        if p > 0 && p.is_multiple_of(n) {
            shift += 1;
        }
        let lead = (p + start.index) % n;
        let mut chosen = vec![order[lead].id];
        let mut racks_used: BTreeSet<Option<&str>> = [order[lead].rack.as_deref()].into();
        // Candidates in the shifted order; a rack already used is skipped until every
        // rack has a replica, a broker already chosen always.
        let step = if n > 1 { 1 + shift % (n - 1) } else { 0 };
        let mut k = 0;
        while chosen.len() < rf && k < 2 * n {
            let candidate = &order[(lead + step + k) % n];
            k += 1;
            if chosen.contains(&candidate.id) {
                continue;
            }
            let rack = candidate.rack.as_deref();
            if racks_used.contains(&rack) && racks_used.len() < racks.len() && k <= n {
                continue;
            }
            racks_used.insert(rack);
            chosen.push(candidate.id);
        }
        // Whatever the racks, every broker is a candidate in the end.
        for b in &order {
            if chosen.len() >= rf {
                break;
            }
            if !chosen.contains(&b.id) {
                chosen.push(b.id);
            }
        }
        out.push(chosen);
    }
    Ok(out)
}

/// Brokers ordered so consecutive ones are on different racks where possible
/// (rack a's first, rack b's first, ..., rack a's second, ...).
fn rack_alternated(brokers: &BTreeMap<i32, BrokerInfo>) -> Vec<&BrokerInfo> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<&BrokerInfo>> = BTreeMap::new();
    for b in brokers.values() {
        by_rack.entry(b.rack.as_deref()).or_default().push(b);
    }
    let mut out = Vec::with_capacity(brokers.len());
    let mut round = 0;
    while out.len() < brokers.len() {
        for members in by_rack.values() {
            if let Some(b) = members.get(round) {
                out.push(*b);
            }
        }
        round += 1;
    }
    out
}

/// The replicas of a new topic's partitions: as the client chose them (checked), or
/// placed over the live `brokers` from a random start.
pub fn place(topic: &crate::NewTopic, brokers: &BTreeMap<i32, BrokerInfo>) -> Result<Vec<Vec<i32>>, ControllerError> {
    match &topic.replica_assignments {
        Some(chosen) => {
            validate(chosen, brokers)?;
            Ok(chosen.clone())
        }
        None => assign(
            brokers,
            0,
            topic.partitions,
            topic.replication_factor,
            Start::random(brokers.len()),
        ),
    }
}

/// The replicas of the partitions a topic grows by (CreatePartitions): as the client
/// chose them, or placed with the topic's replication factor.
pub fn grow(
    topic: &crate::TopicMetadata,
    partitions: i32,
    chosen: Option<Vec<Vec<i32>>>,
    brokers: &BTreeMap<i32, BrokerInfo>,
    start: Start,
) -> Result<Vec<Vec<i32>>, ControllerError> {
    if partitions <= topic.partitions {
        return Err(ControllerError::InvalidPartitions(partitions));
    }
    let added = partitions - topic.partitions;
    match chosen {
        Some(chosen) => {
            let rf = validate(&chosen, brokers)?;
            if chosen.len() != added as usize || rf != topic.replication_factor {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "{} new partitions need {added} lists of {} replicas",
                    added, topic.replication_factor
                )));
            }
            Ok(chosen)
        }
        None => assign(brokers, topic.partitions, added, topic.replication_factor, start),
    }
}

/// Checks replica lists a client chose: every partition as many replicas, no broker
/// twice in one list, every broker live (Kafka answers INVALID_REPLICA_ASSIGNMENT).
pub fn validate(assignments: &[Vec<i32>], brokers: &BTreeMap<i32, BrokerInfo>) -> Result<i16, ControllerError> {
    let invalid = |why: String| Err(ControllerError::InvalidReplicaAssignment(why));
    let Some(first) = assignments.first() else {
        return invalid("no partitions".into());
    };
    if assignments.len() > PARTITIONS_PER_TOPIC_MAX as usize {
        return Err(ControllerError::InvalidPartitions(assignments.len() as i32));
    }
    for (p, replicas) in assignments.iter().enumerate() {
        if replicas.is_empty() || replicas.len() != first.len() {
            return invalid(format!(
                "partition {p} has {} replicas, not {}",
                replicas.len(),
                first.len()
            ));
        }
        let distinct: BTreeSet<&i32> = replicas.iter().collect();
        if distinct.len() != replicas.len() {
            return invalid(format!("partition {p} names a broker twice"));
        }
        if let Some(unknown) = replicas.iter().find(|id| !brokers.contains_key(id)) {
            return invalid(format!("broker {unknown} is not live"));
        }
    }
    i16::try_from(first.len()).or_else(|_| invalid("too many replicas".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[Option<&str>]) -> BTreeMap<i32, BrokerInfo> {
        racks
            .iter()
            .enumerate()
            .map(|(i, rack)| {
                let id = i as i32 + 1;
                let info = BrokerInfo {
                    id,
                    host: "h".into(),
                    port: 9092,
                    rack: rack.map(str::to_string),
                    incarnation: Default::default(),
                };
                (id, info)
            })
            .collect()
    }

    fn count(assignment: &[Vec<i32>], f: impl Fn(&Vec<i32>) -> Vec<i32>) -> BTreeMap<i32, usize> {
        let mut out = BTreeMap::new();
        for r in assignment {
            for id in f(r) {
                *out.entry(id).or_default() += 1;
            }
        }
        out
    }

    #[test]
    fn leaders_and_replicas_spread_evenly() {
        let b = brokers(&[None, None, None]);
        for index in 0..3 {
            for shift in 0..3 {
                let a = assign(&b, 0, 12, 3, Start { index, shift }).unwrap();
                assert_eq!(a.len(), 12);
                let leaders = count(&a, |r| vec![r[0]]);
                assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![4, 4, 4]);
                let replicas = count(&a, |r| r.clone());
                assert_eq!(replicas.values().copied().collect::<Vec<_>>(), vec![12, 12, 12]);
                assert!(a.iter().all(|r| r.iter().collect::<BTreeSet<_>>().len() == 3));
            }
        }
    }

    #[test]
    fn racks_are_used_before_any_is_used_twice() {
        let b = brokers(&[Some("a"), Some("a"), Some("b"), Some("b"), Some("c"), Some("c")]);
        let rack = |id: i32| b[&id].rack.clone();
        let a = assign(&b, 0, 30, 3, Start::random(6)).unwrap();
        for replicas in &a {
            let racks: BTreeSet<_> = replicas.iter().map(|id| rack(*id)).collect();
            assert_eq!(racks.len(), 3, "{replicas:?}");
        }
        let leaders = count(&a, |r| vec![r[0]]);
        assert!(leaders.values().all(|&n| n == 5), "{leaders:?}");
    }

    #[test]
    fn too_few_brokers_and_bad_assignments_are_refused() {
        let b = brokers(&[None, None]);
        assert!(matches!(
            assign(&b, 0, 1, 3, Start::random(2)),
            Err(ControllerError::InvalidReplicationFactor(3, 2))
        ));
        assert_eq!(validate(&[vec![1, 2], vec![2, 1]], &b).unwrap(), 2);
        assert!(validate(&[vec![1, 1]], &b).is_err());
        assert!(validate(&[vec![1], vec![1, 2]], &b).is_err());
        assert!(validate(&[vec![3]], &b).is_err());
        assert!(validate(&[], &b).is_err());
        // A huge count is refused before anything is allocated for it.
        assert!(matches!(
            assign(&b, 0, i32::MAX, 1, Start::random(2)),
            Err(ControllerError::InvalidPartitions(_))
        ));
    }
}
