//! A history checker for replicated logs, in the spirit of Jepsen's queue checker: from
//! what a producer sent, what the broker acknowledged (partition, offset, value), and
//! what readers later read (partition, offset, value), it reports
//!
//! - **lost**: acknowledged, but nothing (or something else) was read at its offset;
//! - **divergent**: read at an acknowledged offset with another value (two leaders'
//!   histories disagree; also counted as lost);
//! - **duplicated**: one sent value read at more than one offset;
//! - **reordered**: values of one key read in another order than they were sent
//!   (values are `<key>-<sequence>`, sequences counting up per key);
//! - **phantom**: a value read that no producer ever sent.
//!
//! A value sent but never acknowledged may or may not be read (Kafka allows either):
//! only its being read twice, out of order or at the wrong place counts.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One record as the producer's acknowledgement or a reader saw it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub value: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub acknowledged: usize,
    pub read: usize,
    pub lost: Vec<Record>,
    pub divergent: Vec<(Record, String)>,
    pub duplicated: Vec<String>,
    pub reordered: Vec<(String, String)>,
    pub phantom: Vec<Record>,
}

impl Report {
    /// Zero of every anomaly.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.divergent.is_empty()
            && self.duplicated.is_empty()
            && self.reordered.is_empty()
            && self.phantom.is_empty()
    }

    pub fn counts(&self) -> String {
        format!(
            "acknowledged {}, read {}, lost {}, divergent {}, duplicated {}, reordered {}, phantom {}",
            self.acknowledged,
            self.read,
            self.lost.len(),
            self.divergent.len(),
            self.duplicated.len(),
            self.reordered.len(),
            self.phantom.len()
        )
    }
}

/// `<key>-<sequence>` split into its key and sequence.
fn key_and_sequence(value: &str) -> Option<(&str, u64)> {
    let (key, seq) = value.rsplit_once('-')?;
    Some((key, seq.parse().ok()?))
}

pub fn check(sent: &HashSet<String>, acknowledged: &[Record], read: &[Record]) -> Report {
    let mut report = Report {
        acknowledged: acknowledged.len(),
        read: read.len(),
        ..Report::default()
    };
    let at: HashMap<(i32, i64), &str> = read
        .iter()
        .map(|r| ((r.partition, r.offset), r.value.as_str()))
        .collect();
    for ack in acknowledged {
        match at.get(&(ack.partition, ack.offset)) {
            Some(v) if *v == ack.value => {}
            Some(v) => {
                report.divergent.push((ack.clone(), v.to_string()));
                report.lost.push(ack.clone());
            }
            None => report.lost.push(ack.clone()),
        }
    }
    // Each offset once (readers may overlap), then by partition and offset.
    let mut unique: BTreeMap<(i32, i64), &str> = BTreeMap::new();
    for r in read {
        unique.entry((r.partition, r.offset)).or_insert(&r.value);
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut last_of_key: HashMap<(i32, &str), (u64, &str)> = HashMap::new();
    for (&(partition, offset), &value) in &unique {
        if !sent.contains(value) {
            report.phantom.push(Record {
                partition,
                offset,
                value: value.to_string(),
            });
            continue;
        }
        *seen.entry(value).or_default() += 1;
        if let Some((key, seq)) = key_and_sequence(value) {
            if let Some((before, before_value)) = last_of_key.insert((partition, key), (seq, value)) {
                if before > seq {
                    report.reordered.push((before_value.to_string(), value.to_string()));
                }
            }
        }
    }
    report.duplicated = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(v, _)| v.to_string())
        .collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(partition: i32, offset: i64, value: &str) -> Record {
        Record {
            partition,
            offset,
            value: value.to_string(),
        }
    }

    #[test]
    fn every_anomaly_is_reported_and_a_clean_history_is_clean() {
        let sent: HashSet<String> = ["a-0", "a-1", "a-2", "b-0", "b-1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let acked = vec![r(0, 0, "a-0"), r(0, 1, "a-1"), r(1, 0, "b-0")];
        let clean = vec![r(0, 0, "a-0"), r(0, 1, "a-1"), r(0, 2, "a-2"), r(1, 0, "b-0")];
        assert!(check(&sent, &acked, &clean).is_clean());

        let bad = vec![
            r(0, 0, "a-0"),
            r(0, 1, "a-2"),  // divergent: a-1 was acknowledged here
            r(0, 2, "a-1"),  // reordered after a-2
            r(0, 3, "a-2"),  // duplicated
            r(0, 4, "zz-9"), // phantom
        ];
        let report = check(&sent, &acked, &bad);
        assert_eq!(report.lost.len(), 2, "a-1 diverged and b-0 is missing");
        assert_eq!(report.divergent.len(), 1);
        assert_eq!(report.reordered, vec![("a-2".to_string(), "a-1".to_string())]);
        assert_eq!(report.duplicated, vec!["a-2".to_string()]);
        assert_eq!(report.phantom, vec![r(0, 4, "zz-9")]);
        assert!(!report.is_clean());
    }
}
