//! One share-partition's state (KIP-932): which records of a partition a share group
//! has handed out, to which member, how often, and what came back. Pure: no I/O and no
//! clock of its own; the share manager feeds it what it read and the time.
//!
//! Offsets from the share-partition start offset (SPSO, `start`) up to `end` have been
//! handed out (or skipped); one without an entry holds no record to deliver (a hole
//! between batches, or a control record), and counts as archived. Offsets at or after
//! `end` have never been handed out. Worked example, a delivery limit of 3:
//!
//! ```text
//!   start=10                          end=15
//!     10 Acked  11 Acquired(a,1)  12 Available(1)  13 Archived  14 Acquired(b,2)
//! ```
//!
//! A fetch acquires 12 (count 2) and then 15, 16… from the log; accepting 11 lets the
//! SPSO pass 10–13 once 12 is acknowledged too. Releasing 14 a third time archives it
//! (its delivery limit): archived records are what a dead-letter topic receives.

use std::collections::BTreeMap;
use std::rc::Rc;

/// A record's state, as KIP-932 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    Available,
    Acquired,
    Acknowledged,
    Archived,
}

impl RecordState {
    /// The persisted code (Kafka's: 0 available, 2 acknowledged, 4 archived; an
    /// acquired record is persisted as available, its lock does not survive).
    pub fn code(self) -> i8 {
        match self {
            RecordState::Available | RecordState::Acquired => 0,
            RecordState::Acknowledged => 2,
            RecordState::Archived => 4,
        }
    }

    pub fn from_code(code: i8) -> Option<RecordState> {
        match code {
            0 => Some(RecordState::Available),
            2 => Some(RecordState::Acknowledged),
            4 => Some(RecordState::Archived),
            _ => None,
        }
    }

    fn is_done(self) -> bool {
        matches!(self, RecordState::Acknowledged | RecordState::Archived)
    }
}

/// Acknowledgement types of ShareFetch/ShareAcknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckType {
    /// An offset with no record (compacted away, or a control record).
    Gap,
    Accept,
    /// Hand it out again (unless its delivery limit is reached).
    Release,
    /// Never hand it out again.
    Reject,
}

impl AckType {
    pub fn from_code(code: i8) -> Option<AckType> {
        match code {
            0 => Some(AckType::Gap),
            1 => Some(AckType::Accept),
            2 => Some(AckType::Release),
            3 => Some(AckType::Reject),
            _ => None,
        }
    }
}

/// Why a record was archived: what a dead-letter record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveReason {
    Rejected,
    DeliveryLimit,
}

impl ArchiveReason {
    pub fn name(self) -> &'static str {
        match self {
            ArchiveReason::Rejected => "REJECTED",
            ArchiveReason::DeliveryLimit => "MAX_DELIVERY_ATTEMPTS_REACHED",
        }
    }
}

/// A record that was archived by a consumer or by its delivery limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchivedRecord {
    pub offset: i64,
    pub delivery_count: i16,
    pub reason: ArchiveReason,
}

/// A run of acquired offsets with one delivery count (ShareFetch's `AcquiredRecords`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    pub first: i64,
    pub last: i64,
    pub delivery_count: i16,
}

/// The group's limits at the time of a call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub lock_ms: i64,
    pub delivery_count_limit: i16,
    /// `group.share.partition.max.record.locks`: the most records in flight (from the
    /// SPSO on), so a stuck record bounds the state a partition keeps.
    pub in_flight_max: i64,
}

/// What an acknowledgement could not do (Kafka's error for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// The offsets are not acquired by this member (already acknowledged, lock
    /// expired, another member's): INVALID_RECORD_STATE.
    InvalidRecordState,
    /// The batch itself is malformed: INVALID_REQUEST.
    InvalidRequest,
}

#[derive(Debug, Clone)]
struct InFlight {
    state: RecordState,
    delivery_count: i16,
    owner: Option<Rc<str>>,
    deadline_ms: i64,
}

impl InFlight {
    fn available(delivery_count: i16) -> InFlight {
        InFlight {
            state: RecordState::Available,
            delivery_count,
            owner: None,
            deadline_ms: 0,
        }
    }
}

/// A persisted run of offsets sharing a state and delivery count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateRange {
    pub first: i64,
    pub last: i64,
    pub state: RecordState,
    pub delivery_count: i16,
}

impl StateRange {
    /// A run as the share-state APIs carry it; None for a state code no version knows
    /// or a run that ends before it starts.
    pub fn from_wire(first: i64, last: i64, state: i8, delivery_count: i16) -> Option<StateRange> {
        (first <= last).then_some(())?;
        Some(StateRange {
            first,
            last,
            state: RecordState::from_code(state)?,
            delivery_count,
        })
    }
}

/// What is persisted of a share-partition (Kafka's ShareSnapshot): the SPSO and every
/// offset in flight, locks dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state_epoch: i32,
    pub start: i64,
    pub ranges: Vec<StateRange>,
}

#[derive(Debug, Clone)]
pub struct SharePartition {
    start: i64,
    end: i64,
    records: BTreeMap<i64, InFlight>,
    state_epoch: i32,
}

impl SharePartition {
    /// A share-partition no one has fetched from yet, starting at `start` (the log
    /// start or end, per `share.auto.offset.reset`).
    pub fn new(start: i64) -> SharePartition {
        SharePartition {
            start,
            end: start,
            records: BTreeMap::new(),
            state_epoch: 0,
        }
    }

    pub fn start(&self) -> i64 {
        self.start
    }

    pub fn end(&self) -> i64 {
        self.end
    }

    /// Records handed out and not yet acknowledged.
    pub fn acquired(&self) -> usize {
        self.records
            .values()
            .filter(|r| r.state == RecordState::Acquired)
            .count()
    }

    /// Records waiting to be handed out again.
    pub fn available(&self) -> usize {
        self.records
            .values()
            .filter(|r| r.state == RecordState::Available)
            .count()
    }

    /// Where the next fetch reads from: the first record to hand out again, else the
    /// end.
    pub fn next_fetch_offset(&self) -> i64 {
        self.records
            .iter()
            .find(|(_, r)| r.state == RecordState::Available)
            .map_or(self.end, |(o, _)| *o)
    }

    /// Whether a fetch could hand something out: a record to redeliver, or room in
    /// flight for new ones.
    pub fn can_acquire(&self, limits: &Limits) -> bool {
        (self.records.len() as i64) < limits.in_flight_max
            || self.records.values().any(|r| r.state == RecordState::Available)
    }

    /// Hands out to `member` what the batches read from the log hold, in order: offsets
    /// available again and offsets never handed out, up to `records_max` and the
    /// in-flight limit. `batches` are (first offset, last offset, is control) of whole
    /// batches; control batches and the holes between batches are never delivered
    /// (they are archived as gaps at once).
    pub fn acquire(
        &mut self,
        member: &Rc<str>,
        batches: &[(i64, i64, bool)],
        records_max: usize,
        now_ms: i64,
        limits: &Limits,
    ) -> Vec<Acquired> {
        let mut out: Vec<Acquired> = Vec::new();
        let mut taken = 0usize;
        let deadline_ms = now_ms.saturating_add(limits.lock_ms);
        'batches: for &(first, last, control) in batches {
            for offset in first.max(self.start)..=last {
                if offset >= self.end {
                    if self.records.len() as i64 >= limits.in_flight_max {
                        break 'batches;
                    }
                    // A hole before this batch (compaction, or a read that began past
                    // the end) holds no record: it is left without an entry.
                    self.end = offset + 1;
                    if control {
                        continue;
                    }
                    self.records.insert(offset, InFlight::available(0));
                } else if control {
                    if self
                        .records
                        .get(&offset)
                        .is_some_and(|r| r.state == RecordState::Available)
                    {
                        self.records.remove(&offset);
                    }
                    continue;
                }
                if taken >= records_max {
                    break 'batches;
                }
                let Some(r) = self.records.get_mut(&offset) else {
                    continue;
                };
                if r.state != RecordState::Available {
                    continue;
                }
                r.state = RecordState::Acquired;
                r.delivery_count = r.delivery_count.saturating_add(1);
                r.owner = Some(member.clone());
                r.deadline_ms = deadline_ms;
                taken += 1;
                match out.last_mut() {
                    Some(run) if run.last + 1 == offset && run.delivery_count == r.delivery_count => run.last = offset,
                    _ => out.push(Acquired {
                        first: offset,
                        last: offset,
                        delivery_count: r.delivery_count,
                    }),
                }
            }
        }
        self.advance();
        out
    }

    /// Applies one acknowledgement batch of `member`: every offset in it must be
    /// acquired by that member, or nothing is applied. `types` has one type for the
    /// whole batch or one per offset. Returns the records it archived (for a
    /// dead-letter topic).
    pub fn acknowledge(
        &mut self,
        member: &str,
        first: i64,
        last: i64,
        types: &[i8],
        limits: &Limits,
    ) -> Result<Vec<ArchivedRecord>, AckError> {
        if first > last || first < 0 {
            return Err(AckError::InvalidRequest);
        }
        let span = last.saturating_sub(first).saturating_add(1);
        let types: Vec<AckType> = types
            .iter()
            .map(|t| AckType::from_code(*t))
            .collect::<Option<_>>()
            .ok_or(AckError::InvalidRequest)?;
        if types.len() != 1 && types.len() as i64 != span {
            return Err(AckError::InvalidRequest);
        }
        if first < self.start || last >= self.end {
            return Err(AckError::InvalidRecordState);
        }
        let type_at = |offset: i64| types[if types.len() == 1 { 0 } else { (offset - first) as usize }];
        for (offset, r) in self.records.range(first..=last) {
            let owned = r.state == RecordState::Acquired && r.owner.as_deref() == Some(member);
            // A gap may also be an offset the broker already archived.
            let known_gap = type_at(*offset) == AckType::Gap && r.state == RecordState::Archived;
            if !(owned || known_gap) {
                return Err(AckError::InvalidRecordState);
            }
        }
        // Offsets with no entry hold no record: only a gap may name them.
        if types.len() > 1 || types[0] != AckType::Gap {
            let entries = self.records.range(first..=last).count() as i64;
            if entries != span && (first..=last).any(|o| !self.records.contains_key(&o) && type_at(o) != AckType::Gap) {
                return Err(AckError::InvalidRecordState);
            }
        }
        let mut archived = Vec::new();
        for (offset, r) in self.records.range_mut(first..=last) {
            if r.state != RecordState::Acquired {
                continue;
            }
            match type_at(*offset) {
                AckType::Accept => finish(r, RecordState::Acknowledged),
                AckType::Gap => finish(r, RecordState::Archived),
                AckType::Reject => {
                    finish(r, RecordState::Archived);
                    archived.push(ArchivedRecord {
                        offset: *offset,
                        delivery_count: r.delivery_count,
                        reason: ArchiveReason::Rejected,
                    });
                }
                AckType::Release => archived.extend(release(*offset, r, limits)),
            }
        }
        self.advance();
        Ok(archived)
    }

    /// Releases every lock that has run out by `now_ms`; true when any did, with the
    /// records that reached their delivery limit.
    pub fn expire_locks(&mut self, now_ms: i64, limits: &Limits) -> (bool, Vec<ArchivedRecord>) {
        self.release_where(limits, |r| r.deadline_ms <= now_ms)
    }

    /// Releases every record `member` holds (it left, or its share session closed).
    pub fn release_member(&mut self, member: &str, limits: &Limits) -> (bool, Vec<ArchivedRecord>) {
        self.release_where(limits, |r| r.owner.as_deref() == Some(member))
    }

    /// The earliest deadline of a lock, if any record is acquired.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.records
            .values()
            .filter(|r| r.state == RecordState::Acquired)
            .map(|r| r.deadline_ms)
            .min()
    }

    fn release_where(&mut self, limits: &Limits, pick: impl Fn(&InFlight) -> bool) -> (bool, Vec<ArchivedRecord>) {
        let mut changed = false;
        let mut archived = Vec::new();
        for (offset, r) in self.records.iter_mut() {
            if r.state == RecordState::Acquired && pick(r) {
                changed = true;
                archived.extend(release(*offset, r, limits));
            }
        }
        if changed {
            self.advance();
        }
        (changed, archived)
    }

    /// Moves the SPSO up to `log_start` when retention or DeleteRecords removed the
    /// records below it (they can no longer be delivered).
    pub fn move_start(&mut self, log_start: i64) -> bool {
        if log_start <= self.start {
            return false;
        }
        self.records = self.records.split_off(&log_start);
        self.start = log_start;
        self.end = self.end.max(log_start);
        true
    }

    /// The SPSO passes every acknowledged and archived record (and every offset with
    /// no record) at its front.
    fn advance(&mut self) {
        let first_open = self
            .records
            .iter()
            .find(|(_, r)| !r.state.is_done())
            .map_or(self.end, |(o, _)| *o);
        if first_open > self.start {
            self.records = self.records.split_off(&first_open);
            self.start = first_open;
        }
    }

    /// What to persist: the SPSO and runs of every offset in flight.
    pub fn snapshot(&self) -> Snapshot {
        let mut ranges: Vec<StateRange> = Vec::new();
        for (offset, r) in &self.records {
            let state = RecordState::from_code(r.state.code()).unwrap_or(RecordState::Available);
            match ranges.last_mut() {
                Some(run)
                    if run.last + 1 == *offset && run.state == state && run.delivery_count == r.delivery_count =>
                {
                    run.last = *offset
                }
                _ => ranges.push(StateRange {
                    first: *offset,
                    last: *offset,
                    state,
                    delivery_count: r.delivery_count,
                }),
            }
        }
        Snapshot {
            state_epoch: self.state_epoch,
            start: self.start,
            ranges,
        }
    }

    /// The share-partition a snapshot describes, every lock released (a record that
    /// was acquired is available again with its delivery count).
    pub fn from_snapshot(snapshot: &Snapshot) -> SharePartition {
        let mut p = SharePartition::new(snapshot.start);
        p.state_epoch = snapshot.state_epoch;
        for range in &snapshot.ranges {
            for offset in range.first.max(snapshot.start)..=range.last {
                let mut r = InFlight::available(range.delivery_count);
                r.state = range.state;
                p.records.insert(offset, r);
                p.end = p.end.max(offset + 1);
            }
        }
        p.advance();
        p
    }
}

fn finish(r: &mut InFlight, state: RecordState) {
    r.state = state;
    r.owner = None;
}

/// An acquired record comes back: available again, or archived once it has been
/// delivered `delivery_count_limit` times.
fn release(offset: i64, r: &mut InFlight, limits: &Limits) -> Option<ArchivedRecord> {
    if r.delivery_count >= limits.delivery_count_limit {
        finish(r, RecordState::Archived);
        return Some(ArchivedRecord {
            offset,
            delivery_count: r.delivery_count,
            reason: ArchiveReason::DeliveryLimit,
        });
    }
    finish(r, RecordState::Available);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        lock_ms: 1000,
        delivery_count_limit: 3,
        in_flight_max: 100,
    };

    fn member(name: &str) -> Rc<str> {
        Rc::from(name)
    }

    #[test]
    fn accepted_records_move_the_start_and_are_never_handed_out_again() {
        let mut p = SharePartition::new(0);
        let a = member("a");
        let got = p.acquire(&a, &[(0, 4, false), (5, 9, false)], 100, 0, &LIMITS);
        assert_eq!(
            got,
            vec![Acquired {
                first: 0,
                last: 9,
                delivery_count: 1
            }]
        );
        assert_eq!(p.acknowledge("a", 0, 4, &[1], &LIMITS), Ok(vec![]));
        assert_eq!(p.start(), 5);
        assert_eq!(
            p.acknowledge("a", 0, 0, &[1], &LIMITS),
            Err(AckError::InvalidRecordState)
        );
        // Nothing is available again: a new fetch reads on from the end.
        assert_eq!(p.next_fetch_offset(), 10);
        assert!(p.acquire(&member("b"), &[(5, 9, false)], 100, 0, &LIMITS).is_empty());
    }

    #[test]
    fn released_records_come_back_with_a_higher_count_until_the_limit_archives_them() {
        let mut p = SharePartition::new(0);
        let a = member("a");
        let got = p.acquire(&a, &[(0, 1, false)], 100, 0, &LIMITS);
        assert_eq!(
            got,
            vec![Acquired {
                first: 0,
                last: 1,
                delivery_count: 1
            }]
        );
        p.acknowledge("a", 1, 1, &[1], &LIMITS).unwrap();
        assert!(p.acknowledge("a", 0, 0, &[2], &LIMITS).unwrap().is_empty());
        for round in 2..=3 {
            assert_eq!(p.next_fetch_offset(), 0);
            let got = p.acquire(&a, &[(0, 1, false)], 100, 0, &LIMITS);
            assert_eq!(
                got,
                vec![Acquired {
                    first: 0,
                    last: 0,
                    delivery_count: round
                }]
            );
            let archived = p.acknowledge("a", 0, 0, &[2], &LIMITS).unwrap();
            if round < 3 {
                assert!(archived.is_empty());
            } else {
                assert_eq!(
                    archived,
                    vec![ArchivedRecord {
                        offset: 0,
                        delivery_count: 3,
                        reason: ArchiveReason::DeliveryLimit
                    }]
                );
            }
        }
        assert_eq!(p.start(), 2);
    }

    #[test]
    fn reject_archives_at_once_and_a_wrong_member_changes_nothing() {
        let mut p = SharePartition::new(10);
        p.acquire(&member("a"), &[(10, 12, false)], 100, 0, &LIMITS);
        assert_eq!(
            p.acknowledge("b", 10, 12, &[1], &LIMITS),
            Err(AckError::InvalidRecordState)
        );
        assert_eq!(p.acquired(), 3);
        let archived = p.acknowledge("a", 10, 12, &[1, 3, 1], &LIMITS).unwrap();
        assert_eq!(
            archived,
            vec![ArchivedRecord {
                offset: 11,
                delivery_count: 1,
                reason: ArchiveReason::Rejected
            }]
        );
        assert_eq!(p.start(), 13);
        assert_eq!(
            p.acknowledge("a", 13, 14, &[1, 1, 1], &LIMITS),
            Err(AckError::InvalidRequest)
        );
    }

    #[test]
    fn an_expired_lock_hands_the_record_to_another_member() {
        let mut p = SharePartition::new(0);
        p.acquire(&member("a"), &[(0, 0, false)], 100, 0, &LIMITS);
        assert_eq!(p.next_deadline_ms(), Some(1000));
        assert_eq!(p.expire_locks(999, &LIMITS), (false, vec![]));
        assert_eq!(p.expire_locks(1000, &LIMITS), (true, vec![]));
        let got = p.acquire(&member("b"), &[(0, 0, false)], 100, 1000, &LIMITS);
        assert_eq!(
            got,
            vec![Acquired {
                first: 0,
                last: 0,
                delivery_count: 2
            }]
        );
        assert_eq!(
            p.acknowledge("a", 0, 0, &[1], &LIMITS),
            Err(AckError::InvalidRecordState)
        );
        assert_eq!(p.acknowledge("b", 0, 0, &[1], &LIMITS), Ok(vec![]));
    }

    #[test]
    fn in_flight_and_record_limits_bound_what_one_fetch_takes() {
        let limits = Limits {
            in_flight_max: 5,
            ..LIMITS
        };
        let mut p = SharePartition::new(0);
        let got = p.acquire(&member("a"), &[(0, 9, false)], 3, 0, &limits);
        assert_eq!(
            got,
            vec![Acquired {
                first: 0,
                last: 2,
                delivery_count: 1
            }]
        );
        let got = p.acquire(&member("b"), &[(0, 9, false)], 100, 0, &limits);
        assert_eq!(
            got,
            vec![Acquired {
                first: 3,
                last: 4,
                delivery_count: 1
            }]
        );
        assert!(!p.can_acquire(&limits));
        p.acknowledge("a", 0, 2, &[1], &limits).unwrap();
        assert!(p.can_acquire(&limits));
    }

    #[test]
    fn control_batches_and_holes_are_never_delivered() {
        let mut p = SharePartition::new(0);
        let got = p.acquire(
            &member("a"),
            &[(0, 1, false), (2, 2, true), (5, 6, false)],
            100,
            0,
            &LIMITS,
        );
        assert_eq!(
            got,
            vec![
                Acquired {
                    first: 0,
                    last: 1,
                    delivery_count: 1
                },
                Acquired {
                    first: 5,
                    last: 6,
                    delivery_count: 1
                }
            ]
        );
        p.acknowledge("a", 0, 1, &[1], &LIMITS).unwrap();
        assert_eq!(p.start(), 5);
    }

    #[test]
    fn huge_ranges_and_holes_cost_nothing() {
        let mut p = SharePartition::new(0);
        let a = member("a");
        // A compacted log: one record, then nothing until a billion offsets later.
        let got = p.acquire(
            &a,
            &[(0, 0, false), (1_000_000_000, 1_000_000_000, false)],
            100,
            0,
            &LIMITS,
        );
        assert_eq!(got.len(), 2);
        assert_eq!(p.records.len(), 2, "no entry per offset of the hole");
        assert_eq!(
            p.acknowledge("a", 0, i64::MAX, &[1], &LIMITS),
            Err(AckError::InvalidRecordState)
        );
        assert_eq!(
            p.acknowledge("a", 0, 1_000_000_000, &[1], &LIMITS),
            Err(AckError::InvalidRecordState),
            "the hole holds no record to accept"
        );
        assert_eq!(p.acknowledge("a", 0, 0, &[1], &LIMITS), Ok(vec![]));
        assert_eq!(p.start(), 1_000_000_000, "the start passes the hole");
        assert_eq!(
            p.acknowledge("a", 1_000_000_000, 1_000_000_000, &[1], &LIMITS),
            Ok(vec![])
        );
        assert_eq!(p.start(), p.end());
    }

    #[test]
    fn a_snapshot_keeps_states_and_counts_and_drops_locks() {
        let mut p = SharePartition::new(0);
        p.acquire(&member("a"), &[(0, 5, false)], 100, 0, &LIMITS);
        p.acknowledge("a", 1, 2, &[1], &LIMITS).unwrap();
        p.acknowledge("a", 3, 3, &[2], &LIMITS).unwrap();
        let snap = p.snapshot();
        assert_eq!(snap.start, 0);
        let back = SharePartition::from_snapshot(&snap);
        assert_eq!(back.start(), 0);
        assert_eq!(back.end(), 6);
        assert_eq!(back.acquired(), 0);
        assert_eq!(back.snapshot(), snap);
        // 0, 3, 4, 5 come back (delivered once); 1 and 2 never do.
        let mut back = back;
        let got = back.acquire(&member("b"), &[(0, 5, false)], 100, 0, &LIMITS);
        assert_eq!(
            got,
            vec![
                Acquired {
                    first: 0,
                    last: 0,
                    delivery_count: 2
                },
                Acquired {
                    first: 3,
                    last: 5,
                    delivery_count: 2
                }
            ]
        );
    }

    #[test]
    fn retention_moves_the_start_past_records_it_removed() {
        let mut p = SharePartition::new(0);
        p.acquire(&member("a"), &[(0, 3, false)], 100, 0, &LIMITS);
        assert!(p.move_start(2));
        assert_eq!(p.start(), 2);
        assert_eq!(p.acquired(), 2);
        assert!(!p.move_start(1));
    }
}
