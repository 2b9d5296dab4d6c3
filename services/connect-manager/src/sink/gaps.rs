//! The gap guard: decides, per message, whether the sink may take it, or
//! whether offsets before it were skipped by the broker and must be fetched
//! again first. Pure (the caller does the seeking), so every case is tested
//! here without a broker.
//!
//! Why: an offset gap is legal in Kafka (compaction, transaction markers,
//! aborted transactions), so librdkafka delivers whatever a fetch returns and
//! never looks back. tansu 0.6's memory engine returns gaps that are not real:
//!
//! - **A fetch from inside a producer batch** (`split_off` in its dynostore
//!   fetch) returns only the batches that *start* at or after the offset. A sink
//!   commits after its own batches, which need not end where a producer batch
//!   does, so a consumer resuming from that commit (after a restart, or when a
//!   rebalance moves the partition) skips the rest of that producer batch. This
//!   is what lost 61 rows of one file in a two-worker run.
//! - **A race between two producers** (read in its source, never reproduced):
//!   on produce it raises the high watermark before it stores the batch, so a
//!   fetch could return batch B while batch A, below it, is not stored yet.
//!
//! So a jump past the offset expected is fetched again from a little *before*
//! it, stepping further back ([`STEP_BACK`]) until the fetch brings either the
//! offset expected (the gap healed; what is read again below it is skipped) or
//! records below it followed by the same jump. The second is proof the broker
//! serves that stretch in full and has nothing in the gap, as Apache Kafka
//! always does: the gap is real and is accepted at once. On Kafka that costs
//! one refetch of a single record per gap, so a topic written in transactions
//! (a commit marker per transaction) is not slowed down.
//!
//! - **A resume inside the partition's *last* producer batch** is the same
//!   defect with nothing after it: the fetch returns nothing at all, so no jump
//!   is ever seen and the rest of the batch waits until another record arrives
//!   in that partition. A two-worker stack stalled this way on its very first
//!   file. So a partition whose records wait (the offset expected is below the
//!   high watermark) and that delivered nothing for a while is treated as a gap
//!   at the high watermark ([`GapGuard::idle`], [`GapGuard::quiet`]): stepped
//!   back the same way, and settled when the broker serves the records below
//!   and nothing more (an open transaction, a trailing commit marker).
//!
//! What the guard never does is let a record past a gap count before the gap is
//! settled: a message held back is not added to the batch, so its offset is not
//! committed.

use std::{collections::HashMap, ops::Range};

/// How far before the offset expected each refetch of a gap starts. tansu
/// needs the start of the producer batch holding that offset; librdkafka's
/// batches hold at most 10,000 records by default, so the last step reaches
/// past any. The first step, one record back, settles a real gap on Kafka.
pub(crate) const STEP_BACK: [i64; 5] = [1, 16, 256, 4096, 65_536];

/// What to do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The next one expected (or the first of its partition, or a redelivery of
    /// earlier offsets): take it.
    Take,
    /// The next one expected, which a refetch brought after a gap: take it.
    Healed {
        /// The offsets that were missing when the gap was found.
        missing: Range<i64>,
        /// Refetches it took.
        refetches: u32,
    },
    /// The refetch served the records below the gap and the same jump: the gap
    /// is real; take it. `missing` never existed.
    Accepted { missing: Range<i64> },
    /// Below a gap being refetched: read again by a step back, already taken
    /// (or committed by the group): skip it.
    Skip,
    /// Past the next offset expected: do not take it; seek the partition to
    /// `from` and let the next fetch bring what is missing.
    Refetch { from: i64 },
}

/// Where one partition stands.
#[derive(Debug)]
struct Partition {
    /// The offset expected next.
    next: i64,
    gap: Option<Gap>,
    /// A message came since the last [`GapGuard::idle`].
    touched: bool,
    /// `(next, high watermark)` at the last look that found records waiting
    /// and none delivered: a second look at the same is needed to probe, so a
    /// sink that merely paused (its writer slow, librdkafka's queue full) does
    /// not refetch.
    suspect: Option<(i64, i64)>,
    /// `(next, high watermark)` when a quiet probe found that the broker
    /// delivers nothing more: probed again only once either moves.
    settled: Option<(i64, i64)>,
}

impl Partition {
    fn at(next: i64) -> Self {
        Self {
            next,
            gap: None,
            touched: false,
            suspect: None,
            settled: None,
        }
    }
}

/// A gap at the partition's `next`, being refetched.
#[derive(Debug)]
struct Gap {
    /// The first offset seen past it.
    seen: i64,
    /// Refetches so far; the last one started at `next - STEP_BACK[refetches - 1]`.
    refetches: u32,
    /// Where the last refetch started.
    from: i64,
    /// The last refetch delivered a record below the gap.
    below: bool,
    /// Found by [`GapGuard::quiet`], not by a jump: `seen` is the high watermark.
    quiet: bool,
}

/// The guard's state: the next offset expected per (topic, partition), learned
/// from the messages delivered since the last rebalance.
#[derive(Debug, Default)]
pub(crate) struct GapGuard {
    generation: u64,
    topics: HashMap<String, HashMap<i32, Partition>>,
}

impl GapGuard {
    /// The rebalance generation the state belongs to.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// After a rebalance: the partitions may have moved, and each starts again
    /// where the group committed, so everything learned is forgotten.
    pub(crate) fn rebalanced(&mut self, generation: u64) {
        self.generation = generation;
        self.topics.clear();
    }

    /// The partition resumes at its committed offset `next`: the first message
    /// is checked against it. Without this the first message sets the baseline.
    pub(crate) fn resume_at(&mut self, topic: &str, partition: i32, next: i64) {
        self.topics
            .entry(topic.to_string())
            .or_default()
            .insert(partition, Partition::at(next));
    }

    /// The partitions known here that delivered nothing since the last call,
    /// with the offset each expects next: those worth asking the broker whether
    /// records wait.
    pub(crate) fn idle(&mut self) -> Vec<(String, i32, i64)> {
        let mut idle = Vec::new();
        for (topic, partitions) in &mut self.topics {
            for (&partition, p) in partitions.iter_mut() {
                if !std::mem::take(&mut p.touched) {
                    idle.push((topic.clone(), partition, p.next));
                }
            }
        }
        idle.sort();
        idle
    }

    /// An idle partition's high watermark is `high`: if records wait there
    /// (and waited as much at the last look), returns where to fetch from. The
    /// first probe steps back one record, as
    /// for a gap; a probe that finds its refetch still brought nothing steps
    /// further; one whose refetch brought the records below and nothing more
    /// settles (nothing the broker will deliver lies in `next..high` now).
    pub(crate) fn quiet(&mut self, topic: &str, partition: i32, high: i64) -> Option<i64> {
        let p = self.topics.get_mut(topic)?.get_mut(&partition)?;
        if p.next >= high {
            p.settled = None;
            return None;
        }
        let next = p.next;
        let refetch = |refetches: u32| (next - STEP_BACK[refetches as usize]).max(0);
        let Some(gap) = p.gap.as_mut() else {
            if p.settled == Some((next, high))
                || p.suspect.replace((next, high)) != Some((next, high))
            {
                return None;
            }
            let from = refetch(0);
            p.gap = Some(Gap {
                seen: high,
                refetches: 1,
                from,
                below: false,
                quiet: true,
            });
            return Some(from);
        };
        if gap.below || gap.from == 0 || gap.refetches as usize >= STEP_BACK.len() {
            // A gap found by a jump ends when the jump comes again: it exists.
            if gap.quiet {
                p.gap = None;
                p.settled = Some((next, high));
            }
            return None;
        }
        let from = refetch(gap.refetches);
        gap.refetches += 1;
        gap.from = from;
        Some(from)
    }

    /// The verdict on the message at `offset`.
    pub(crate) fn check(&mut self, topic: &str, partition: i32, offset: i64) -> Verdict {
        let partitions = match self.topics.get_mut(topic) {
            Some(p) => p,
            None => self.topics.entry(topic.to_string()).or_default(),
        };
        let Some(p) = partitions.get_mut(&partition) else {
            let mut p = Partition::at(offset + 1);
            p.touched = true;
            partitions.insert(partition, p);
            return Verdict::Take;
        };
        p.touched = true;
        let expected = p.next;
        if offset == expected {
            p.next = offset + 1;
            return match p.gap.take() {
                Some(gap) => Verdict::Healed {
                    missing: expected..gap.seen,
                    refetches: gap.refetches,
                },
                None => Verdict::Take,
            };
        }
        if offset < expected {
            if let Some(gap) = p.gap.as_mut() {
                // Read again by a step back: the broker serves below the gap.
                gap.below = true;
                return Verdict::Skip;
            }
            // Offsets going back without a seek of ours: a redelivery, normal.
            p.next = offset + 1;
            return Verdict::Take;
        }
        let refetch = |refetches: u32| (expected - STEP_BACK[refetches as usize]).max(0);
        let Some(gap) = p.gap.as_mut() else {
            let from = refetch(0);
            p.gap = Some(Gap {
                seen: offset,
                refetches: 1,
                from,
                below: false,
                quiet: false,
            });
            return Verdict::Refetch { from };
        };
        // The jump again. Real when the refetch served what lies below the gap
        // (or started at the partition's first offset, with nothing below),
        // or when no step back reaches further.
        if gap.below || gap.from == 0 || gap.refetches as usize >= STEP_BACK.len() {
            p.next = offset + 1;
            p.gap = None;
            return Verdict::Accepted {
                missing: expected..offset,
            };
        }
        let from = refetch(gap.refetches);
        gap.refetches += 1;
        gap.from = from;
        gap.below = false;
        Verdict::Refetch { from }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "t";

    fn takes(guard: &mut GapGuard, offsets: std::ops::RangeInclusive<i64>) {
        for o in offsets {
            assert_eq!(guard.check(T, 0, o), Verdict::Take, "offset {o}");
        }
    }

    fn skips(guard: &mut GapGuard, offsets: std::ops::RangeInclusive<i64>) {
        for o in offsets {
            assert_eq!(guard.check(T, 0, o), Verdict::Skip, "offset {o}");
        }
    }

    #[test]
    fn in_order_messages_are_taken() {
        let mut g = GapGuard::default();
        takes(&mut g, 0..=9);
    }

    #[test]
    fn the_first_message_of_a_partition_sets_the_baseline() {
        let mut g = GapGuard::default();
        takes(&mut g, 500..=502);
    }

    #[test]
    fn a_gap_is_refetched_from_just_before_it_and_healed() {
        let mut g = GapGuard::default();
        takes(&mut g, 0..=4);
        // Batch 10.. arrives while 5..=9 is not there (the tansu race).
        assert_eq!(g.check(T, 0, 10), Verdict::Refetch { from: 4 });
        // The refetch from 4 brings 4 again (skipped), then the missing batch.
        skips(&mut g, 4..=4);
        assert_eq!(
            g.check(T, 0, 5),
            Verdict::Healed {
                missing: 5..10,
                refetches: 1
            }
        );
        takes(&mut g, 6..=12);
    }

    #[test]
    fn a_real_gap_costs_one_refetch_of_one_record() {
        let mut g = GapGuard::default();
        takes(&mut g, 0..=4);
        // A commit marker at 5 (Apache Kafka): 6 follows 4.
        assert_eq!(g.check(T, 0, 6), Verdict::Refetch { from: 4 });
        skips(&mut g, 4..=4);
        assert_eq!(g.check(T, 0, 6), Verdict::Accepted { missing: 5..6 });
        takes(&mut g, 7..=9);
        // The next marker is a gap of its own.
        assert_eq!(g.check(T, 0, 11), Verdict::Refetch { from: 9 });
        skips(&mut g, 9..=9);
        assert_eq!(g.check(T, 0, 11), Verdict::Accepted { missing: 10..11 });
        takes(&mut g, 12..=12);
    }

    #[test]
    fn a_gap_that_moves_on_is_a_new_gap() {
        let mut g = GapGuard::default();
        takes(&mut g, 0..=4);
        assert_eq!(g.check(T, 0, 20), Verdict::Refetch { from: 4 });
        // The refetch brings 5..=9, then 15..: 10..=14 is still missing.
        skips(&mut g, 4..=4);
        assert_eq!(
            g.check(T, 0, 5),
            Verdict::Healed {
                missing: 5..20,
                refetches: 1
            }
        );
        takes(&mut g, 6..=9);
        assert_eq!(
            g.check(T, 0, 15),
            Verdict::Refetch { from: 9 },
            "a new gap, not settled by the old one's refetch"
        );
    }

    #[test]
    fn offsets_going_back_are_a_redelivery() {
        let mut g = GapGuard::default();
        takes(&mut g, 0..=9);
        takes(&mut g, 3..=12);
    }

    #[test]
    fn a_rebalance_forgets_every_partition() {
        let mut g = GapGuard::default();
        takes(&mut g, 0..=4);
        assert!(matches!(g.check(T, 0, 9), Verdict::Refetch { .. }));
        g.rebalanced(1);
        assert_eq!(g.generation(), 1);
        // Another member may have read on; the first message is the baseline.
        takes(&mut g, 9..=11);
    }

    #[test]
    fn partitions_and_topics_are_independent() {
        let mut g = GapGuard::default();
        assert_eq!(g.check(T, 0, 0), Verdict::Take);
        assert_eq!(g.check(T, 1, 100), Verdict::Take);
        assert_eq!(g.check("u", 0, 50), Verdict::Take);
        assert_eq!(g.check(T, 0, 5), Verdict::Refetch { from: 0 });
        // Partition 0's gap holds nothing else back.
        assert_eq!(g.check(T, 1, 101), Verdict::Take);
        assert_eq!(g.check("u", 0, 51), Verdict::Take);
        assert_eq!(g.check("u", 0, 53), Verdict::Refetch { from: 51 });
        assert_eq!(g.check(T, 1, 102), Verdict::Take);
        assert!(matches!(g.check(T, 0, 1), Verdict::Healed { .. }));
        assert!(matches!(g.check("u", 0, 52), Verdict::Healed { .. }));
    }

    #[test]
    fn a_resume_inside_a_producer_batch_steps_back_and_skips_what_it_reads_again() {
        let mut g = GapGuard::default();
        // Committed 1005; the producer batch 1000..=1009 started before it, so
        // tansu answers a fetch from 1005 (or 1004) with the next batch, at 1010.
        g.resume_at(T, 0, 1005);
        assert_eq!(g.check(T, 0, 1010), Verdict::Refetch { from: 1004 });
        assert_eq!(g.check(T, 0, 1010), Verdict::Refetch { from: 1005 - 16 });
        // 989 is inside an earlier batch: tansu starts at 1000.
        skips(&mut g, 1000..=1004);
        assert_eq!(
            g.check(T, 0, 1005),
            Verdict::Healed {
                missing: 1005..1010,
                refetches: 2
            }
        );
        takes(&mut g, 1006..=1012);
    }

    #[test]
    fn a_resume_on_a_commit_marker_is_settled_by_one_record_below_it() {
        let mut g = GapGuard::default();
        // Committed 5 sits on a commit marker (Apache Kafka): 6 is next.
        g.resume_at(T, 0, 5);
        assert_eq!(g.check(T, 0, 6), Verdict::Refetch { from: 4 });
        skips(&mut g, 4..=4);
        assert_eq!(g.check(T, 0, 6), Verdict::Accepted { missing: 5..6 });
        takes(&mut g, 7..=8);
    }

    #[test]
    fn with_nothing_below_the_steps_back_stop_at_the_first_offset() {
        let mut g = GapGuard::default();
        // Offsets 0..=19 compacted away: 20 is the first record there is.
        g.resume_at(T, 0, 10);
        assert_eq!(g.check(T, 0, 20), Verdict::Refetch { from: 9 });
        assert_eq!(g.check(T, 0, 20), Verdict::Refetch { from: 0 });
        assert_eq!(g.check(T, 0, 20), Verdict::Accepted { missing: 10..20 });
        takes(&mut g, 21..=22);
    }

    #[test]
    fn every_step_back_is_tried_before_a_gap_with_nothing_below_is_accepted() {
        let mut g = GapGuard::default();
        g.resume_at(T, 0, 100_000);
        for back in STEP_BACK {
            assert_eq!(
                g.check(T, 0, 100_001),
                Verdict::Refetch {
                    from: 100_000 - back
                },
                "step back {back}"
            );
        }
        assert_eq!(
            g.check(T, 0, 100_001),
            Verdict::Accepted {
                missing: 100_000..100_001
            }
        );
    }

    #[test]
    fn a_resume_behind_the_first_message_is_a_redelivery() {
        let mut g = GapGuard::default();
        // The group committed further after the fetch position was chosen.
        g.resume_at(T, 0, 50);
        takes(&mut g, 40..=60);
    }

    #[test]
    fn a_resume_inside_the_last_producer_batch_is_found_by_the_quiet_probe() {
        let mut g = GapGuard::default();
        // Committed 5 inside the batch 0..=9, the partition's last: tansu
        // answers a fetch from 5 (or 4) with nothing at all.
        g.resume_at(T, 0, 5);
        assert_eq!(g.idle(), vec![(T.to_string(), 0, 5)]);
        assert_eq!(g.quiet(T, 0, 10), None, "one look is not enough");
        assert_eq!(g.idle(), vec![(T.to_string(), 0, 5)]);
        assert_eq!(g.quiet(T, 0, 10), Some(4));
        assert_eq!(g.idle(), vec![(T.to_string(), 0, 5)]);
        assert_eq!(g.quiet(T, 0, 10), Some(0));
        skips(&mut g, 0..=4);
        assert_eq!(
            g.check(T, 0, 5),
            Verdict::Healed {
                missing: 5..10,
                refetches: 2
            }
        );
        takes(&mut g, 6..=9);
        assert_eq!(g.idle(), Vec::new(), "it delivered since the last look");
        assert_eq!(g.idle(), vec![(T.to_string(), 0, 10)]);
        assert_eq!(g.quiet(T, 0, 10), None, "nothing waits");
    }

    #[test]
    fn a_quiet_probe_that_reads_only_below_settles_until_something_moves() {
        let mut g = GapGuard::default();
        // Apache Kafka: 0..=9 read, 10 is the trailing commit marker.
        g.resume_at(T, 0, 10);
        assert_eq!(g.quiet(T, 0, 11), None);
        assert_eq!(g.quiet(T, 0, 11), Some(9));
        skips(&mut g, 9..=9);
        assert_eq!(g.quiet(T, 0, 11), None);
        assert_eq!(g.quiet(T, 0, 11), None, "settled: no refetch per look");
        // A new transaction is open: its records wait below the stable offset.
        assert_eq!(g.quiet(T, 0, 14), None);
        assert_eq!(g.quiet(T, 0, 14), Some(9));
        skips(&mut g, 9..=9);
        assert_eq!(g.quiet(T, 0, 14), None);
        // Committed: its records come after the marker, a jump like any other.
        assert_eq!(g.check(T, 0, 11), Verdict::Refetch { from: 9 });
        skips(&mut g, 9..=9);
        assert_eq!(g.check(T, 0, 11), Verdict::Accepted { missing: 10..11 });
        takes(&mut g, 12..=12);
    }

    #[test]
    fn a_quiet_probe_leaves_a_gap_found_by_a_jump_to_the_jump() {
        let mut g = GapGuard::default();
        g.resume_at(T, 0, 5);
        assert_eq!(g.check(T, 0, 8), Verdict::Refetch { from: 4 });
        skips(&mut g, 4..=4);
        // The jump has not come again yet: the probe does not decide for it.
        assert_eq!(g.quiet(T, 0, 9), None);
        assert_eq!(g.quiet(T, 0, 9), None);
        assert_eq!(g.check(T, 0, 8), Verdict::Accepted { missing: 5..8 });
    }

    #[test]
    fn a_partition_that_moved_between_two_looks_is_not_probed() {
        let mut g = GapGuard::default();
        g.resume_at(T, 0, 5);
        assert_eq!(g.quiet(T, 0, 10), None);
        // The writer was slow, then the records came: not a stall.
        takes(&mut g, 5..=7);
        assert_eq!(g.quiet(T, 0, 10), None);
        assert_eq!(g.quiet(T, 0, 12), None, "the producer wrote on");
        assert_eq!(g.quiet(T, 0, 12), Some(7));
    }

    #[test]
    fn an_unknown_partition_is_not_probed() {
        let mut g = GapGuard::default();
        assert_eq!(g.idle(), Vec::new());
        assert_eq!(g.quiet(T, 0, 10), None);
    }
}
