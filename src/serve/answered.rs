//! The alerts the sidecar has answered within the cooldown, for de-duplication. Held in memory for the whole
//! cooldown, so bounded in count: past `cap`, the oldest answer is forgotten first (its alert, sent again, takes a
//! snapshot or joins one, which is the safe side of forgetting).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

/// (profile, fingerprint, startsAt): what makes two alerts the same incident.
pub type AlertKey = (String, String, String);

struct Answer {
    at: Instant,
    snapshot: String,
    /// Position in `by_age`.
    seq: u64,
}

/// Answers by alert, and the same answers by age, so that the oldest is found (and forgotten) without a scan.
pub struct Answered {
    cap: usize,
    next_seq: u64,
    by_key: HashMap<Arc<AlertKey>, Answer>,
    by_age: BTreeMap<u64, Arc<AlertKey>>,
}

impl Answered {
    /// `cap` is at least 1 (the site config refuses 0).
    pub fn new(cap: usize) -> Self {
        Self { cap: cap.max(1), next_seq: 0, by_key: HashMap::new(), by_age: BTreeMap::new() }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The snapshot that answered `key`, if it is still remembered.
    pub fn get(&self, key: &AlertKey) -> Option<&str> {
        self.by_key.get(key).map(|a| a.snapshot.as_str())
    }

    /// Forgets what was answered `cooldown` or longer before `now`.
    pub fn expire(&mut self, now: Instant, cooldown: Duration) {
        while let Some((_, key)) = self.by_age.first_key_value() {
            let expired = self.by_key.get(&**key).is_none_or(|a| now.duration_since(a.at) >= cooldown);
            if !expired {
                break;
            }
            if let Some((_, key)) = self.by_age.pop_first() {
                self.by_key.remove(&*key);
            }
        }
    }

    /// Remembers that `snapshot` answered `key` at `at`, forgetting the oldest answers to stay within the cap.
    pub fn insert(&mut self, key: AlertKey, at: Instant, snapshot: String) {
        let key = Arc::new(key);
        if let Some(old) = self.by_key.remove(&key) {
            self.by_age.remove(&old.seq);
        }
        while self.by_key.len() >= self.cap {
            let Some((_, oldest)) = self.by_age.pop_first() else { break };
            self.by_key.remove(&*oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_age.insert(seq, key.clone());
        self.by_key.insert(key, Answer { at, snapshot, seq });
    }

    /// Forgets every alert `snapshot` answered (it failed: a repeat must take a new one).
    pub fn forget_snapshot(&mut self, snapshot: &str) {
        let gone: Vec<u64> = self.by_key.values().filter(|a| a.snapshot == snapshot).map(|a| a.seq).collect();
        for seq in gone {
            if let Some(key) = self.by_age.remove(&seq) {
                self.by_key.remove(&*key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> AlertKey {
        ("audit-tamper".into(), format!("fp{i}"), "2026-11-29T01:00:00Z".into())
    }

    #[test]
    fn more_distinct_alerts_than_the_cap_keep_only_the_newest() {
        let mut a = Answered::new(100);
        let now = Instant::now();
        for i in 0..10_000 {
            a.insert(key(i), now, format!("s{i}"));
            assert!(a.len() <= 100);
            assert_eq!(a.by_age.len(), a.len(), "both views hold the same answers");
        }
        assert_eq!(a.get(&key(9_999)), Some("s9999"));
        assert_eq!(a.get(&key(9_900)), Some("s9900"), "the newest 100 are all still remembered");
        assert_eq!(a.get(&key(9_899)), None, "the oldest are forgotten first");
    }

    #[test]
    fn a_repeat_refreshes_its_place_and_a_failed_snapshot_is_forgotten_whole() {
        let mut a = Answered::new(3);
        let now = Instant::now();
        a.insert(key(1), now, "s1".into());
        a.insert(key(2), now, "s2".into());
        a.insert(key(1), now, "s1b".into());
        a.insert(key(3), now, "s3".into());
        a.insert(key(4), now, "s4".into());
        assert_eq!(a.get(&key(2)), None, "key 2 was the oldest once key 1 was answered again");
        assert_eq!(a.get(&key(1)), Some("s1b"));
        a.forget_snapshot("s3");
        assert_eq!((a.get(&key(3)), a.len(), a.by_age.len()), (None, 2, 2));
    }

    #[test]
    fn answers_older_than_the_cooldown_expire_and_younger_ones_stay() {
        let mut a = Answered::new(10);
        let t0 = Instant::now();
        a.insert(key(1), t0, "s1".into());
        a.insert(key(2), t0 + Duration::from_secs(60), "s2".into());
        a.expire(t0 + Duration::from_secs(90), Duration::from_secs(60));
        assert_eq!((a.get(&key(1)), a.get(&key(2))), (None, Some("s2")));
        assert_eq!(a.by_age.len(), 1);
    }
}
