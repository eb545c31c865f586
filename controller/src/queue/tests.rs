use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::*;

/// Reconciles recorded in order, with the most in flight at once, overall and per key.
#[derive(Default)]
struct Record {
    runs: Mutex<Vec<(&'static str, Instant)>>,
    in_flight: Mutex<HashMap<&'static str, usize>>,
    most_per_key: AtomicUsize,
    total: AtomicUsize,
    most_total: AtomicUsize,
}

impl Record {
    fn runs_of(&self, key: &str) -> Vec<Instant> {
        let runs = self.runs.lock().expect("lock");
        runs.iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, at)| *at)
            .collect()
    }
}

/// A reconcile that takes `work`, records itself and answers `action(run number)`.
fn reconciler(
    record: Arc<Record>,
    work: Duration,
    action: fn(usize) -> Action,
) -> impl Fn(&'static str) -> Pin<Box<dyn Future<Output = Action> + Send>> {
    move |key| {
        let record = record.clone();
        Box::pin(async move {
            let run = {
                let mut runs = record.runs.lock().expect("lock");
                runs.push((key, Instant::now()));
                runs.iter().filter(|(k, _)| *k == key).count()
            };
            {
                let mut in_flight = record.in_flight.lock().expect("lock");
                let now = in_flight.entry(key).or_default();
                *now += 1;
                record.most_per_key.fetch_max(*now, Ordering::SeqCst);
            }
            let total = record.total.fetch_add(1, Ordering::SeqCst) + 1;
            record.most_total.fetch_max(total, Ordering::SeqCst);
            tokio::time::sleep(work).await;
            record.total.fetch_sub(1, Ordering::SeqCst);
            *record
                .in_flight
                .lock()
                .expect("lock")
                .entry(key)
                .or_default() -= 1;
            action(run)
        })
    }
}

fn present(key: &&'static str) -> Option<&'static str> {
    Some(*key)
}

#[tokio::test]
async fn triggers_while_a_key_runs_make_one_more_run_never_a_second_at_once() {
    let record = Arc::new(Record::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let runner = tokio::spawn(run(
        rx,
        present,
        reconciler(record.clone(), Duration::from_millis(100), |_| {
            Action::await_change()
        }),
        4,
    ));
    tx.send("a").expect("send");
    tokio::time::sleep(Duration::from_millis(30)).await;
    for _ in 0..5 {
        tx.send("a").expect("send");
    }
    drop(tx);
    runner.await.expect("runner");
    assert_eq!(record.runs_of("a").len(), 2);
    assert_eq!(record.most_per_key.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn triggers_queued_before_their_turn_are_one_reconcile() {
    let record = Arc::new(Record::default());
    let (tx, rx) = mpsc::unbounded_channel();
    // One at a time: "b" waits behind "a" while it is triggered three more times.
    for key in ["a", "b", "b", "b", "b"] {
        tx.send(key).expect("send");
    }
    drop(tx);
    run(
        rx,
        present,
        reconciler(record.clone(), Duration::from_millis(20), |_| {
            Action::await_change()
        }),
        1,
    )
    .await;
    assert_eq!(record.runs_of("a").len(), 1);
    assert_eq!(record.runs_of("b").len(), 1);
}

#[tokio::test]
async fn no_more_than_the_concurrency_run_at_once_and_every_key_runs() {
    let record = Arc::new(Record::default());
    let (tx, rx) = mpsc::unbounded_channel();
    const KEYS: [&str; 12] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
    for key in KEYS.iter().chain(KEYS.iter()) {
        tx.send(*key).expect("send");
    }
    drop(tx);
    run(
        rx,
        present,
        reconciler(record.clone(), Duration::from_millis(10), |_| {
            Action::await_change()
        }),
        3,
    )
    .await;
    assert_eq!(record.most_total.load(Ordering::SeqCst), 3);
    assert_eq!(record.most_per_key.load(Ordering::SeqCst), 1);
    for key in KEYS {
        assert!(!record.runs_of(key).is_empty(), "{key} never ran");
    }
}

#[tokio::test]
async fn a_requeue_runs_again_after_its_delay() {
    let record = Arc::new(Record::default());
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send("a").expect("send");
    drop(tx);
    run(
        rx,
        present,
        reconciler(record.clone(), Duration::ZERO, |run| match run {
            1 => Action::requeue(Duration::from_millis(80)),
            _ => Action::await_change(),
        }),
        2,
    )
    .await;
    let runs = record.runs_of("a");
    assert_eq!(runs.len(), 2);
    assert!(runs[1] - runs[0] >= Duration::from_millis(80));
}

#[tokio::test]
async fn a_trigger_before_a_requeue_is_due_replaces_it() {
    let record = Arc::new(Record::default());
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send("a").expect("send");
    let runner = tokio::spawn(run(
        rx,
        present,
        reconciler(record.clone(), Duration::ZERO, |run| match run {
            1 => Action::requeue(Duration::from_millis(150)),
            _ => Action::await_change(),
        }),
        2,
    ));
    tokio::time::sleep(Duration::from_millis(20)).await;
    tx.send("a").expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(tx);
    runner.await.expect("runner");
    let runs = record.runs_of("a");
    assert_eq!(
        runs.len(),
        2,
        "the trigger's run, and no third when the old requeue was due"
    );
    assert!(runs[1] - runs[0] < Duration::from_millis(150));
}

#[tokio::test]
async fn a_key_whose_object_is_gone_is_not_reconciled() {
    let record = Arc::new(Record::default());
    let (tx, rx) = mpsc::unbounded_channel();
    for key in ["gone", "here"] {
        tx.send(key).expect("send");
    }
    drop(tx);
    run(
        rx,
        |key: &&'static str| (*key != "gone").then_some(*key),
        reconciler(record.clone(), Duration::ZERO, |_| Action::await_change()),
        2,
    )
    .await;
    assert!(record.runs_of("gone").is_empty());
    assert_eq!(record.runs_of("here").len(), 1);
}

#[test]
fn a_burst_leaves_no_room_behind() {
    let mut queue = Queue::new();
    for key in 0..50_000_u32 {
        queue.wake(key);
    }
    let now = Instant::now();
    while let Some(key) = queue.start() {
        queue.finished(key, Action::await_change(), now);
    }
    assert!(queue.is_idle());
    assert!(
        queue.ready_set.capacity() <= 4 * KEEP_ROOM,
        "{}",
        queue.ready_set.capacity()
    );
    assert!(
        queue.running.capacity() <= 4 * KEEP_ROOM,
        "{}",
        queue.running.capacity()
    );
    assert!(
        queue.ready.capacity() <= 4 * KEEP_ROOM,
        "{}",
        queue.ready.capacity()
    );
}

#[test]
fn the_earliest_time_asked_for_wins() {
    let mut queue = Queue::new();
    let now = Instant::now();
    queue.schedule("a", now + Duration::from_secs(10));
    queue.schedule("a", now + Duration::from_secs(1));
    queue.schedule("a", now + Duration::from_secs(5));
    assert_eq!(queue.next_due(), Some(now + Duration::from_secs(1)));
    queue.fire(now + Duration::from_secs(1));
    assert_eq!(queue.start(), Some("a"));
    queue.finished("a", Action::await_change(), now + Duration::from_secs(1));
    // The later timers are stale: nothing is due again.
    queue.fire(now + Duration::from_secs(20));
    assert_eq!(queue.start(), None);
    assert!(queue.is_idle());
}
