//! What the report shows of the events, gathered in one pass and in bounded memory whatever the bundle's size:
//! counts per service per time bucket, the ids seen most near the alert, dead letters by stream and reason,
//! pending entries by group, and a few excerpts near the alert.

use std::collections::{BTreeMap, HashMap};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::timeline::Event;

/// The chart's buckets at most.
const BUCKETS: i64 = 240;
/// The longest span the chart covers, back from its end.
const LONGEST: SignedDuration = SignedDuration::from_hours(48);
/// Without a window, the chart covers this long before the snapshot.
const DEFAULT_SPAN: SignedDuration = SignedDuration::from_hours(6);
/// "Near the alert": this far either side of its start.
pub const NEAR: SignedDuration = SignedDuration::from_mins(15);
/// Services charted by name; any more are counted together as `other`.
const SERVICES: usize = 24;
/// Distinct ids counted near the alert at most (a Misra-Gries summary: see [`Digest::count_id`]).
pub const IDS: usize = 100_000;
/// Distinct ids an artifact's own summary keeps while it waits to be merged with the others ([`Digest::compact`]).
pub const PART_IDS: usize = 10_000;
/// Distinct reasons counted per dead-letter stream.
const REASONS: usize = 256;
/// Excerpts kept.
const EXCERPTS: usize = 60;
/// Dead-letter streams and consumer groups shown.
const STREAMS: usize = 64;

/// The time axis of the chart.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Axis {
    pub start: Timestamp,
    pub end: Timestamp,
    pub bucket: SignedDuration,
    pub buckets: usize,
}

impl Axis {
    /// The axis for a bundle: its window (at most [`LONGEST`], ending at its `until` or when the snapshot began),
    /// or the [`DEFAULT_SPAN`] before that, in at most [`BUCKETS`] buckets of a round size.
    pub fn of(
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        created_at: Timestamp,
        alert: Option<Timestamp>,
    ) -> Self {
        let mut end = until.unwrap_or(created_at);
        if let Some(a) = alert
            && a > end
        {
            end = a;
        }
        let mut start = since.unwrap_or_else(|| end.checked_sub(DEFAULT_SPAN).unwrap_or(end));
        if end.duration_since(start) > LONGEST {
            start = end.checked_sub(LONGEST).unwrap_or(start);
        }
        if start >= end {
            start = end.checked_sub(SignedDuration::from_mins(1)).unwrap_or(end);
        }
        let span = end.duration_since(start).as_secs();
        let sizes = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440];
        let minutes = sizes.iter().copied().find(|m| span <= m * 60 * BUCKETS).unwrap_or(1440);
        let bucket = SignedDuration::from_mins(minutes);
        // Buckets start on whole multiples of their size, so the same minute falls in the same bucket everywhere.
        let aligned = start.as_second() - start.as_second().rem_euclid(minutes * 60);
        let start = Timestamp::from_second(aligned).unwrap_or(start);
        let buckets = ((end.as_second() - start.as_second()) / (minutes * 60) + 1).clamp(1, BUCKETS + 1) as usize;
        Self { start, end, bucket, buckets }
    }

    fn index(&self, t: Timestamp) -> Result<usize, bool> {
        if t < self.start {
            return Err(false);
        }
        let i = (t.as_second() - self.start.as_second()) / self.bucket.as_secs();
        if i as usize >= self.buckets { Err(true) } else { Ok(i as usize) }
    }

    pub fn bucket_start(&self, i: usize) -> Timestamp {
        self.start.checked_add(self.bucket * i as i32).unwrap_or(self.start)
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct DeadLetters {
    pub entries: u64,
    /// Reason (up to its first `:`, Caracal's `kind:<error>`) → count, and one full example of it.
    pub reasons: BTreeMap<String, (u64, String)>,
    pub oldest: Option<Timestamp>,
    pub newest: Option<Timestamp>,
    /// An example of the oldest entry's place in the bundle.
    pub oldest_at: Option<(String, u64)>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Pending {
    pub entries: u64,
    pub max_idle_ms: u64,
    pub max_deliveries: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Digest {
    pub axis: Axis,
    /// The moment the report centres on: the alert's start, or when the snapshot began.
    pub anchor: Timestamp,
    pub anchored_on_alert: bool,
    pub events: u64,
    /// Per service, events per bucket of the axis (pending entries and collector runs are not system activity,
    /// and are left out of the chart).
    pub series: BTreeMap<String, Vec<u64>>,
    pub before_axis: u64,
    pub after_axis: u64,
    pub kinds: BTreeMap<String, u64>,
    /// Id name → value → events carrying it within [`NEAR`] of the anchor, at most [`IDS`] of them, each count short
    /// of the truth by at most `ids_shortfall` (by name first, so a value is looked up as the `&str` it is, without a
    /// key made for it: this runs for every id of every event near the anchor).
    pub near_ids: BTreeMap<String, HashMap<Box<str>, u64>>,
    /// Distinct (name, value) pairs in `near_ids`.
    pub near_ids_distinct: usize,
    /// How much any count of `near_ids` may be short (0: every count is exact). An id carried by more events than
    /// this is in `near_ids`, whatever order the events came in.
    pub ids_shortfall: u64,
    pub near_events: u64,
    pub dead_letters: BTreeMap<String, DeadLetters>,
    pub pending: BTreeMap<(String, String), Pending>,
    /// The most telling events nearest the anchor: errors and warnings, dead letters, alerts, activations.
    pub excerpts: Vec<Event>,
}

impl Digest {
    pub fn new(axis: Axis, anchor: Timestamp, anchored_on_alert: bool) -> Self {
        Self {
            axis,
            anchor,
            anchored_on_alert,
            events: 0,
            series: BTreeMap::new(),
            before_axis: 0,
            after_axis: 0,
            kinds: BTreeMap::new(),
            near_ids: BTreeMap::new(),
            near_ids_distinct: 0,
            near_events: 0,
            ids_shortfall: 0,
            dead_letters: BTreeMap::new(),
            pending: BTreeMap::new(),
            excerpts: Vec::new(),
        }
    }

    /// An empty digest on the same axis, for one artifact read on its own (merged back with [`Digest::merge`]).
    pub fn fresh(&self) -> Self {
        Self::new(self.axis, self.anchor, self.anchored_on_alert)
    }

    pub fn add(&mut self, e: &Event) {
        if self.count(e.time, &e.service, &e.kind) {
            self.detail(e);
        }
    }

    /// Counts a record in the chart; whether its whole event matters (near the anchor, a dead letter, a pending
    /// entry). Most records are only counted: their lines are never parsed.
    fn count(&mut self, time: Timestamp, service: &str, kind: &str) -> bool {
        self.events += 1;
        // Counted without an allocation once the kind is known: this runs for every record of the bundle.
        let room = self.kinds.len() < 256;
        match self.kinds.get_mut(kind) {
            Some(n) => *n += 1,
            None if room => {
                self.kinds.insert(kind.to_string(), 1);
            }
            None => {}
        }
        if is_activity(kind) {
            match self.axis.index(time) {
                Ok(i) => {
                    let name = if self.series.len() < SERVICES || self.series.contains_key(service) {
                        service
                    } else {
                        "other"
                    };
                    let buckets = self.axis.buckets;
                    let row = match self.series.get_mut(name) {
                        Some(row) => row,
                        None => self.series.entry(name.to_string()).or_insert_with(|| vec![0; buckets]),
                    };
                    row[i] += 1;
                }
                Err(false) => self.before_axis += 1,
                Err(true) => self.after_axis += 1,
            }
        }
        time.duration_since(self.anchor).abs() <= NEAR || kind == "stream.dead_letter" || kind == "stream.pending"
    }

    /// What the report shows of a whole event beyond its count: ids near the anchor, dead letters, pending
    /// entries, excerpts.
    fn detail(&mut self, e: &Event) {
        let near = e.time.duration_since(self.anchor).abs() <= NEAR;
        let activity = is_activity(&e.kind);
        if near && activity {
            self.near_events += 1;
            for (k, v) in e.ids.iter() {
                if k != "entry_id" {
                    self.count_id(k, v, 1);
                }
            }
        }
        match e.kind.as_ref() {
            "stream.dead_letter" => self.dead_letter(e),
            "stream.pending" => self.pending(e),
            _ => {}
        }
        if near && telling(e) {
            self.excerpt(e);
        }
    }

    fn dead_letter(&mut self, e: &Event) {
        if self.dead_letters.len() >= STREAMS && !self.dead_letters.contains_key(&*e.instance) {
            return;
        }
        let d = self.dead_letters.entry(e.instance.to_string()).or_default();
        d.entries += 1;
        let full = e.details.get("reason").or_else(|| e.details.get("error")).unwrap_or("(none given)");
        let key = full.split(':').next().unwrap_or(full).trim().to_string();
        if d.reasons.len() < REASONS || d.reasons.contains_key(&key) {
            d.reasons.entry(key).or_insert_with(|| (0, full.to_string())).0 += 1;
        }
        if d.oldest.is_none_or(|o| e.time < o) {
            d.oldest = Some(e.time);
            d.oldest_at = Some((e.source.path.to_string(), e.source.line.or(e.source.record).unwrap_or(0)));
        }
        if d.newest.is_none_or(|n| e.time > n) {
            d.newest = Some(e.time);
        }
    }

    fn pending(&mut self, e: &Event) {
        let group = e.details.get("group").unwrap_or_default().to_string();
        let key = (e.instance.to_string(), group);
        if self.pending.len() >= STREAMS && !self.pending.contains_key(&key) {
            return;
        }
        let p = self.pending.entry(key).or_default();
        p.entries += 1;
        let n = |k: &str| e.details.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        p.max_idle_ms = p.max_idle_ms.max(n("idle_ms"));
        p.max_deliveries = p.max_deliveries.max(n("deliveries"));
    }

    /// Adds `n` events carrying id `name` = `value`, in bounded memory: a Misra-Gries summary of at most [`IDS`]
    /// counters. When a new id finds them all taken, every counter and the new one give up the smallest count among
    /// them (added to `ids_shortfall`), and those left at zero make room. So evidence flooded with distinct ids (an
    /// attacker's, or a busy system's) cannot push out the ids that matter: any id carried by more events than the
    /// shortfall keeps its place, its count short by at most that. Each pass over the counters takes away more
    /// than [`IDS`] counts, so passes cost no more than the counting did.
    fn count_id(&mut self, name: &str, value: &str, mut n: u64) {
        if let Some(count) = self.near_ids.get_mut(name).and_then(|values| values.get_mut(value)) {
            *count += n;
            return;
        }
        if self.near_ids_distinct >= IDS {
            let least = self.near_ids.values().flat_map(|values| values.values()).copied().min().unwrap_or(0).min(n);
            n -= least;
            self.give_up(least);
            if n == 0 {
                return;
            }
        }
        let values = match self.near_ids.get_mut(name) {
            Some(values) => values,
            None => self.near_ids.entry(name.to_string()).or_default(),
        };
        values.insert(value.into(), n);
        self.near_ids_distinct += 1;
    }

    /// Takes `least` from every counter of the ids summary (added to its shortfall) and drops those it leaves at zero.
    fn give_up(&mut self, least: u64) {
        self.ids_shortfall += least;
        for values in self.near_ids.values_mut() {
            values.retain(|_, count| {
                *count = count.saturating_sub(least);
                *count > 0
            });
            // A flooded name's table gives its room back, not only its entries.
            if values.len() < values.capacity() / 4 {
                values.shrink_to_fit();
            }
        }
        self.near_ids.retain(|_, values| !values.is_empty());
        self.near_ids_distinct = self.near_ids.values().map(HashMap::len).sum();
    }

    /// Leaves at most `keep` counters in the ids summary, as a Misra-Gries summary does (every counter gives up the
    /// count of the largest one that does not fit): a part kept until it is merged holds that much at most.
    pub fn compact(&mut self, keep: usize) {
        if self.near_ids_distinct <= keep {
            return;
        }
        let mut counts: Vec<u64> = self.near_ids.values().flat_map(|values| values.values().copied()).collect();
        let (_, largest_left_out, _) = counts.select_nth_unstable_by(keep, |a, b| b.cmp(a));
        self.give_up(*largest_left_out);
    }

    /// Keeps the [`EXCERPTS`] telling events nearest the anchor (ties: the earlier read).
    fn excerpt(&mut self, e: &Event) {
        let distance = |x: &Event| x.time.duration_since(self.anchor).abs();
        if self.excerpts.len() >= EXCERPTS {
            let (far, d) = self
                .excerpts
                .iter()
                .enumerate()
                .map(|(i, x)| (i, distance(x)))
                .max_by_key(|(_, d)| *d)
                .unwrap_or((0, SignedDuration::ZERO));
            if distance(e) >= d {
                return;
            }
            self.excerpts.swap_remove(far);
        }
        self.excerpts.push(e.clone());
    }

    pub fn merge(&mut self, other: Digest) {
        // The other summary's shortfall adds to this one's; its counters go in most first (ties by name and value),
        // so the merge does not depend on a hash map's order.
        self.ids_shortfall += other.ids_shortfall;
        for (k, v, n) in other.top_ids(usize::MAX) {
            self.count_id(k, v, n);
        }
        self.events += other.events;
        for (k, n) in other.kinds {
            if self.kinds.len() < 256 || self.kinds.contains_key(&k) {
                *self.kinds.entry(k).or_default() += n;
            }
        }
        for (service, row) in other.series {
            let name = if self.series.len() < SERVICES || self.series.contains_key(&service) {
                service
            } else {
                "other".into()
            };
            let mine = self.series.entry(name).or_insert_with(|| vec![0; self.axis.buckets]);
            for (a, b) in mine.iter_mut().zip(row) {
                *a += b;
            }
        }
        self.before_axis += other.before_axis;
        self.after_axis += other.after_axis;
        self.near_events += other.near_events;
        for (stream, d) in other.dead_letters {
            if self.dead_letters.len() >= STREAMS && !self.dead_letters.contains_key(&stream) {
                continue;
            }
            let mine = self.dead_letters.entry(stream).or_default();
            mine.entries += d.entries;
            for (k, (n, example)) in d.reasons {
                if mine.reasons.len() < REASONS || mine.reasons.contains_key(&k) {
                    mine.reasons.entry(k).or_insert_with(|| (0, example)).0 += n;
                }
            }
            if d.oldest.is_some() && (mine.oldest.is_none() || d.oldest < mine.oldest) {
                mine.oldest = d.oldest;
                mine.oldest_at = d.oldest_at;
            }
            if d.newest > mine.newest {
                mine.newest = d.newest;
            }
        }
        for (k, p) in other.pending {
            if self.pending.len() >= STREAMS && !self.pending.contains_key(&k) {
                continue;
            }
            let mine = self.pending.entry(k).or_default();
            mine.entries += p.entries;
            mine.max_idle_ms = mine.max_idle_ms.max(p.max_idle_ms);
            mine.max_deliveries = mine.max_deliveries.max(p.max_deliveries);
        }
        for e in other.excerpts {
            self.excerpt(&e);
        }
    }

    /// The ids carried by most events near the anchor, most first (ties by name and value).
    pub fn top_ids(&self, n: usize) -> Vec<(&str, &str, u64)> {
        let mut all: Vec<(&str, &str, u64)> = self
            .near_ids
            .iter()
            .flat_map(|(k, values)| values.iter().map(move |(v, n)| (k.as_str(), &**v, *n)))
            .collect();
        all.sort_unstable_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)).then(a.1.cmp(b.1)));
        all.truncate(n);
        all
    }

    /// The excerpts in time order.
    pub fn excerpts_in_order(&self) -> Vec<&Event> {
        let mut v: Vec<&Event> = self.excerpts.iter().collect();
        v.sort_by(|a, b| {
            a.time.cmp(&b.time).then(a.source.path.cmp(&b.source.path)).then(a.source.line.cmp(&b.source.line))
        });
        v
    }
}

/// Pending entries and collector runs are not the system's activity: they are left out of the chart.
fn is_activity(kind: &str) -> bool {
    kind != "stream.pending" && kind != "collector.run"
}

impl crate::timeline::extract::Sink for Digest {
    fn wants(&mut self, time: Timestamp, service: &str, kind: &str) -> bool {
        self.count(time, service, kind)
    }
    fn take(&mut self, event: Event) {
        self.detail(&event);
    }
}

/// Whether an event is worth quoting in the report: an error or warning, a dead letter, an alert, a policy-set
/// activation, a revocation.
fn telling(e: &Event) -> bool {
    matches!(e.level.as_deref(), Some("error" | "fatal" | "panic" | "warn" | "warning" | "critical"))
        || matches!(
            e.kind.as_ref(),
            "stream.dead_letter"
                | "alert.firing"
                | "alert.resolved"
                | "policy_set.activated"
                | "authority.revoked"
                | "delegation.revoked"
                | "session.terminated"
                | "admin_token.revoked"
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Source;

    fn ev(at: &str, service: &str, kind: &'static str) -> Event {
        Event {
            time: at.parse().unwrap(),
            source: Source { collector: "c".into(), path: "data/c/x".into(), line: Some(1), record: None },
            service: service.into(),
            instance: "caracal.audit.events.dlq".into(),
            kind: kind.into(),
            level: None,
            message: String::new(),
            ids: crate::timeline::event::Fields::from([("request_id", "req-1")]),
            details: crate::timeline::event::Fields::from([("reason", "json_parse_error:unexpected EOF")]),
        }
    }

    #[test]
    fn the_axis_is_round_and_covers_the_window() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let a = Axis::of(Some(t("2026-12-05T00:00:00Z")), None, t("2026-12-05T02:00:00Z"), None);
        assert_eq!(a.bucket, SignedDuration::from_mins(1));
        assert_eq!(a.start, t("2026-12-05T00:00:00Z"));
        assert_eq!(a.buckets, 121);
        let week = Axis::of(Some(t("2026-11-28T00:00:00Z")), None, t("2026-12-05T00:00:00Z"), None);
        assert_eq!(week.start, t("2026-12-03T00:00:00Z"), "at most 48 hours");
        assert_eq!(week.bucket, SignedDuration::from_mins(15));
    }

    #[test]
    fn counts_and_dead_letters_merge_as_if_read_together() {
        let axis = Axis::of(None, None, "2026-12-05T03:00:00Z".parse().unwrap(), None);
        let anchor = "2026-12-05T02:50:00Z".parse().unwrap();
        let mut whole = Digest::new(axis, anchor, true);
        let mut a = whole.fresh();
        let mut b = whole.fresh();
        let events = [
            ev("2026-12-05T02:40:00Z", "redis", "stream.dead_letter"),
            ev("2026-12-05T02:41:30Z", "audit", "log"),
            ev("2026-12-05T01:00:00Z", "redis", "stream.dead_letter"),
            ev("2026-11-01T00:00:00Z", "audit", "log"),
        ];
        for (i, e) in events.iter().enumerate() {
            whole.add(e);
            if i % 2 == 0 { a.add(e) } else { b.add(e) }
        }
        a.merge(b);
        assert_eq!(a.series, whole.series);
        assert_eq!(a.before_axis, 1);
        assert_eq!(a.near_ids, whole.near_ids);
        let d = &a.dead_letters["caracal.audit.events.dlq"];
        assert_eq!(d.entries, 2);
        assert_eq!(d.reasons["json_parse_error"].0, 2);
        assert_eq!(d.oldest, Some("2026-12-05T01:00:00Z".parse().unwrap()));
        assert_eq!(a.top_ids(5), vec![("request_id", "req-1", 2)], "two events within 15 minutes of the anchor");
    }

    /// A compacted part merged into another keeps the Misra-Gries bounds against the exact counts: every count at
    /// most the truth and short of it by at most the shortfall, any id left out carried by no more than that.
    #[test]
    fn compacted_and_merged_counts_stay_within_their_shortfall() {
        let axis = Axis::of(None, None, "2026-12-05T03:00:00Z".parse().unwrap(), None);
        let mut whole = Digest::new(axis, "2026-12-05T02:50:00Z".parse().unwrap(), true);
        let (mut a, mut b) = (whole.fresh(), whole.fresh());
        let mut truth: BTreeMap<String, u64> = BTreeMap::new();
        let with = |v: &str| {
            let mut e = ev("2026-12-05T02:45:00Z", "gateway", "log");
            e.ids = crate::timeline::event::Fields::from([("request_id", v)]);
            e
        };
        for (part, v, n) in [(0, "x", 5), (0, "y", 3), (0, "z", 2), (1, "y", 4), (1, "w", 1), (1, "x", 1)] {
            for _ in 0..n {
                if part == 0 { a.add(&with(v)) } else { b.add(&with(v)) }
            }
            *truth.entry(v.to_string()).or_default() += n;
        }
        a.compact(1);
        assert_eq!((a.near_ids_distinct, a.ids_shortfall), (1, 3), "x alone left, each count having given up y's 3");
        b.compact(2);
        whole.merge(a);
        whole.merge(b);
        assert!(whole.ids_shortfall >= 3, "a part's shortfall is the merged one's too");
        let counted: BTreeMap<&str, u64> = whole.top_ids(usize::MAX).into_iter().map(|(_, v, n)| (v, n)).collect();
        for (v, t) in &truth {
            let c = counted.get(v.as_str()).copied().unwrap_or(0);
            assert!(
                c <= *t && *t <= c + whole.ids_shortfall,
                "{v}: counted {c}, truly {t}, shortfall {}",
                whole.ids_shortfall
            );
        }
    }

    /// An attacker who writes more distinct ids than the report counts, before and between the events that matter,
    /// cannot push those out of "ids seen most", read in one pass or per artifact and merged.
    #[test]
    fn a_flood_of_distinct_ids_does_not_hide_the_frequent_ones() {
        let axis = Axis::of(None, None, "2026-12-05T03:00:00Z".parse().unwrap(), None);
        let mut whole = Digest::new(axis, "2026-12-05T02:50:00Z".parse().unwrap(), true);
        let (mut first, mut second) = (whole.fresh(), whole.fresh());
        let junk = |i: usize| {
            let mut e = ev("2026-12-05T02:45:00Z", "gateway", "log");
            e.ids = crate::timeline::event::Fields::from([("request_id", format!("junk-{i}").as_str())]);
            e
        };
        let wanted = ev("2026-12-05T02:46:00Z", "gateway", "log");
        // 250,000 distinct ids once each; the one that matters first shows after 120,000 of them (when a summary
        // that kept the first ids it met would be full), then 300 times.
        for i in 0..250_000 {
            let e = junk(i);
            whole.add(&e);
            if i < 150_000 {
                first.add(&e)
            } else {
                second.add(&e)
            }
            if (i >= 120_000 && i % 650 == 0) || i > 249_900 {
                whole.add(&wanted);
                if i < 150_000 { first.add(&wanted) } else { second.add(&wanted) }
            }
        }
        let truth = 200 + 100 - 1;
        assert_eq!(whole.near_events - 250_000, truth, "the count of the frequent one, as written");
        first.merge(second);
        for d in [&whole, &first] {
            assert!(d.near_ids_distinct <= IDS, "bounded: {}", d.near_ids_distinct);
            assert!(d.ids_shortfall > 0, "more distinct ids than counters were seen");
            // Each give-up takes the shortfall's rise from more than IDS counters: never more than the ids seen allow.
            let seen = 250_000 + truth;
            assert!(d.ids_shortfall * (IDS as u64 + 1) <= seen, "shortfall {} for {seen} ids", d.ids_shortfall);
            let top = d.top_ids(1);
            assert_eq!((top[0].0, top[0].1), ("request_id", "req-1"), "the frequent id leads: {top:?}");
            assert!(
                top[0].2 <= truth && top[0].2 + d.ids_shortfall >= truth,
                "{} short by at most {}",
                top[0].2,
                d.ids_shortfall
            );
        }
    }
}
