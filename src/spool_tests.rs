//! Unit tests of the spool, against a temporary directory.

use super::*;

fn config(dir: &Path, max: usize, memory: usize, segment: usize) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_items: max,
        memory_items: memory,
        segment_items: segment,
    }
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_str().unwrap().starts_with(SEGMENT_PREFIX)
        })
        .count()
}

fn push_all(spool: &mut Spool<u32>, items: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut dropped = Vec::new();
    for i in items {
        let (d, written) = spool.push(i);
        written.unwrap();
        dropped.extend(d.items);
        assert_eq!(d.unread, 0);
    }
    dropped
}

/// Takes everything, acknowledging as it goes, and returns the items in order.
fn drain(spool: &mut Spool<u32>, batch: usize) -> Vec<u32> {
    let mut out = Vec::new();
    loop {
        let taken = spool.take(batch).unwrap();
        if taken.is_empty() {
            return out;
        }
        out.extend(taken.iter().map(|s| s.item));
        spool.ack(taken).unwrap();
    }
}

#[test]
fn items_come_out_in_order_and_acked_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, recovered) = Spool::<u32>::open(config(dir.path(), 100, 100, 3)).unwrap();
    assert_eq!(recovered, Recovered::default());
    push_all(&mut spool, 0..10);
    assert_eq!(segments(dir.path()), 4);
    assert_eq!(drain(&mut spool, 4), (0..10).collect::<Vec<_>>());
    assert!(spool.is_empty());
    assert_eq!(segments(dir.path()), 0, "nothing left to replay");
}

#[test]
fn requeued_items_come_back_first() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::<u32>::open(config(dir.path(), 100, 100, 10)).unwrap();
    push_all(&mut spool, 0..5);
    let taken = spool.take(3).unwrap();
    assert_eq!(spool.len(), 5);
    spool.requeue(taken);
    assert_eq!(drain(&mut spool, 2), vec![0, 1, 2, 3, 4]);
}

#[test]
fn past_the_memory_bound_items_spill_to_disk_and_are_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::<u32>::open(config(dir.path(), 1000, 4, 3)).unwrap();
    push_all(&mut spool, 0..20);
    assert_eq!(spool.memory.len(), 4, "memory stays within its bound");
    assert_eq!(spool.len(), 20);
    assert_eq!(drain(&mut spool, 5), (0..20).collect::<Vec<_>>());
    // Memory mode again once everything was read back.
    push_all(&mut spool, 20..22);
    assert_eq!(spool.memory.len(), 2);
}

#[test]
fn unacknowledged_items_are_replayed_by_the_next_open_and_acked_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = Spool::<u32>::open(config(dir.path(), 1000, 5, 4)).unwrap();
        push_all(&mut spool, 0..12);
        let first = spool.take(4).unwrap();
        spool.ack(first).unwrap();
        // Taken but never acknowledged: still pending when the process dies.
        let _in_flight = spool.take(2).unwrap();
        // Dropped without any shutdown step, like a killed process.
    }
    let (mut spool, recovered) = Spool::<u32>::open(config(dir.path(), 1000, 5, 4)).unwrap();
    assert_eq!(recovered.items, 8);
    assert_eq!(drain(&mut spool, 3), (4..12).collect::<Vec<_>>());
    assert_eq!(segments(dir.path()), 0);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_spool, _) = Spool::<u32>::open(SpoolConfig::new(dir.path())).unwrap();
    let second = Spool::<u32>::open(SpoolConfig::new(dir.path()));
    assert!(matches!(second, Err(SpoolError::Busy(_))));
}

#[test]
fn past_the_bound_the_oldest_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::<u32>::open(config(dir.path(), 5, 3, 2)).unwrap();
    let dropped = push_all(&mut spool, 0..9);
    assert_eq!(dropped, vec![0, 1, 2, 3]);
    assert_eq!(spool.len(), 5);
    assert_eq!(drain(&mut spool, 10), vec![4, 5, 6, 7, 8]);
}

#[test]
fn dropping_reads_segments_of_an_earlier_run_back_to_drop_item_by_item() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = Spool::<u32>::open(config(dir.path(), 100, 100, 3)).unwrap();
        push_all(&mut spool, 0..9);
    }
    let (mut spool, recovered) = Spool::<u32>::open(config(dir.path(), 5, 100, 3)).unwrap();
    assert_eq!(recovered.items, 9);
    let dropped = push_all(&mut spool, [9]);
    assert_eq!(dropped, vec![0, 1, 2, 3, 4]);
    assert_eq!(drain(&mut spool, 10), vec![5, 6, 7, 8, 9]);
    assert_eq!(
        segments(dir.path()),
        0,
        "every segment read back and acknowledged is gone"
    );
}

#[test]
fn unreadable_lines_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(segment_path(dir.path(), 7), "1\n{not json\n2\n3").unwrap();
    let (mut spool, recovered) = Spool::<u32>::open(config(dir.path(), 100, 100, 3)).unwrap();
    assert_eq!(recovered.items, 4);
    assert_eq!(drain(&mut spool, 10), vec![1, 2, 3]);
    assert_eq!(spool.unreadable(), 1);
    // New segments are numbered after the old ones.
    push_all(&mut spool, [4]);
    assert!(segment_path(dir.path(), 8).exists());
}

#[test]
fn sync_flushes_only_what_was_written_since_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::<u32>::open(config(dir.path(), 100, 100, 3)).unwrap();
    assert!(!spool.sync().unwrap(), "nothing written yet");
    push_all(&mut spool, 0..2);
    assert!(spool.sync().unwrap(), "a new segment and two lines");
    assert!(!spool.sync().unwrap(), "nothing new since");
    push_all(&mut spool, 2..3);
    assert!(spool.sync().unwrap(), "one more line in the open segment");
    drop(spool);
    // What was synced is what the next open replays.
    let (mut spool, recovered) = Spool::<u32>::open(config(dir.path(), 100, 100, 3)).unwrap();
    assert_eq!(recovered.items, 3);
    assert_eq!(drain(&mut spool, 10), vec![0, 1, 2]);
}
