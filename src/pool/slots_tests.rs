//! Unit tests of the pool core on dummy connections: affinity, hand-off and its fairness guard,
//! waiters that give up, MaxOpen shrinking below use and growing, closing.

use super::*;

use futures::FutureExt;

const NOW: Duration = Duration::from_millis(1);
const LONG: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Dummy {
    id: u32,
    schema: Option<String>,
}

impl Affine for Dummy {
    fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }
}

fn slots(max_open: usize, max_idle: usize) -> Slots<Dummy> {
    Slots::with_limits(max_open, max_idle, Arc::default(), LONG, Duration::ZERO)
}

/// Opens a connection in a free slot, as a checkout would.
fn open(s: &Slots<Dummy>, id: u32, schema: &str) -> Box<Dummy> {
    match s.take(&schema.into(), LONG) {
        Ok(Take::Open(r)) => r.fill(),
        _ => panic!("expected a free slot for connection {id}"),
    }
    Box::new(Dummy {
        id,
        schema: Some(schema.to_owned()),
    })
}

fn idle(s: &Slots<Dummy>, schema: &str) -> Box<Dummy> {
    match s.take(&schema.into(), LONG) {
        Ok(Take::Idle(c)) => c,
        _ => panic!("expected an idle connection for {schema}"),
    }
}

fn queue<'a>(s: &'a Slots<Dummy>, schema: &str) -> Waiting<'a, Dummy> {
    match s.take(&schema.into(), LONG) {
        Ok(Take::Wait(w)) => w,
        _ => panic!("expected to wait for {schema}"),
    }
}

/// The connection a waiter was handed, if it was handed one already; one not served yet
/// gives up (leaves the queue).
async fn served(w: Waiting<'_, Dummy>) -> Option<u32> {
    match w.wait().now_or_never()? {
        Ok(Got::Conn(c)) => Some(c.id),
        Ok(Got::Open(_)) => panic!("expected a connection, got a slot"),
        Err(e) => panic!("not served: {e:?}"),
    }
}

/// Asserts a waiter was handed a slot, and opens a connection in it.
async fn slot_granted(w: Waiting<'_, Dummy>) {
    match w.wait().now_or_never() {
        Some(Ok(Got::Open(r))) => r.fill(),
        _ => panic!("expected a slot to open a connection in"),
    }
}

/// Waits for `w` with the pool's watchdog running, as a destination pool runs it.
async fn watched<'a>(
    s: &'a Slots<Dummy>,
    w: Waiting<'a, Dummy>,
) -> Result<Got<'a, Dummy>, WaitError> {
    tokio::select! {
        got = w.wait() => got,
        () = s.watch() => panic!("the watchdog stopped with a waiter queued"),
    }
}

/// Whether a checkout on `schema` that finds nothing free times out after a short limit.
async fn times_out(s: &Slots<Dummy>, schema: &str) -> bool {
    match s.take(&schema.into(), NOW) {
        Ok(Take::Wait(w)) => matches!(watched(s, w).await, Err(WaitError::Timeout)),
        _ => panic!("expected to wait for {schema}"),
    }
}

fn counts(s: &Slots<Dummy>) -> (usize, usize, usize) {
    let st = s.status();
    assert_eq!(st.in_use, st.open - st.idle);
    (st.open, st.idle, st.waiting)
}

#[tokio::test]
async fn a_checkout_prefers_an_idle_connection_on_its_schema_most_recent_first() {
    let s = slots(5, 5);
    let (a1, b, a2, d) = (
        open(&s, 1, "a"),
        open(&s, 2, "b"),
        open(&s, 3, "a"),
        open(&s, 4, "d"),
    );
    for c in [a1, b, a2, d] {
        s.give_back(c);
    }
    assert_eq!(idle(&s, "a").id, 3);
    assert_eq!(idle(&s, "a").id, 1);
    // None on "c": the least recently used of the rest (its tenant has been away longest).
    assert_eq!(idle(&s, "c").id, 2);
    assert_eq!(idle(&s, "c").id, 4);
    assert!(matches!(s.take(&"c".into(), LONG), Ok(Take::Open(_))));
}

#[tokio::test]
async fn a_returned_connection_goes_to_the_oldest_waiter_on_its_schema() {
    let s = slots(2, 2);
    let (x, y) = (open(&s, 1, "x"), open(&s, 2, "b"));
    let (a, b1, b2) = (queue(&s, "a"), queue(&s, "b"), queue(&s, "b"));
    s.give_back(y);
    assert_eq!(counts(&s), (2, 0, 2));
    assert_eq!(served(b1).await, Some(2));
    // No waiter on "x": the oldest waiter gets it.
    s.give_back(x);
    assert_eq!(served(a).await, Some(1));
    assert_eq!(served(b2).await, None);
    assert_eq!(counts(&s), (2, 0, 0));
}

#[tokio::test]
async fn a_waiter_passed_over_too_long_gets_the_next_connection_whatever_its_schema() {
    let guard = Duration::from_secs(10);
    let s = Slots::with_limits(2, 2, Arc::default(), guard, Duration::ZERO);
    let (x, y) = (open(&s, 1, "b"), open(&s, 2, "b"));
    let a = queue(&s, "a");
    let b = queue(&s, "b");
    s.give_back(x);
    assert_eq!(
        served(b).await,
        Some(1),
        "affinity passes the fresh waiter over"
    );
    let c = queue(&s, "b");
    // The oldest waiter has now waited longer than the guard allows.
    if let Some(w) = s.lock().waiters.front_mut() {
        w.since = Instant::now().checked_sub(guard).expect("clock far enough");
    }
    s.give_back(y);
    assert_eq!(served(a).await, Some(2));
    assert_eq!(served(c).await, None);
}

/// When every checkout waits long, the guard stretches to twice the typical wait, and no
/// further: a waiter passed over that long is served next whatever its schema.
#[tokio::test]
async fn the_pass_over_guard_follows_the_typical_wait() {
    let guard = Duration::from_millis(5);
    let typical = Duration::from_millis(40);
    let s = Slots::with_limits(3, 3, Arc::default(), guard, Duration::ZERO);
    {
        let mut st = s.lock();
        for _ in 0..100 {
            st.typical_wait.note(typical);
        }
        let learnt = st.typical_wait.get();
        assert!(learnt > typical * 9 / 10 && learnt <= typical, "{learnt:?}");
    }
    // A full pool: every checkout below queues.
    let (x, y, _z) = (open(&s, 1, "b"), open(&s, 2, "b"), open(&s, 3, "b"));
    let a = queue(&s, "a");
    let b = queue(&s, "b");
    // Waited past the fixed guard, but not past twice the typical wait: still passed over.
    let set_oldest_wait = |waited: Duration| {
        if let Some(w) = s.lock().waiters.front_mut() {
            w.since = Instant::now()
                .checked_sub(waited)
                .expect("clock far enough");
        }
    };
    set_oldest_wait(typical);
    s.give_back(x);
    assert_eq!(served(b).await, Some(1), "affinity passes the oldest over");
    // Past twice the typical wait: served first, whatever its schema.
    let c = queue(&s, "b");
    set_oldest_wait(typical * 3);
    s.give_back(y);
    assert_eq!(served(a).await, Some(2));
    assert_eq!(served(c).await, None);
}

#[tokio::test]
async fn with_no_affinity_window_the_oldest_waiter_is_always_served_first() {
    let s = Slots::with_limits(1, 1, Arc::default(), Duration::ZERO, Duration::ZERO);
    let x = open(&s, 1, "b");
    let (a, b) = (queue(&s, "a"), queue(&s, "b"));
    s.give_back(x);
    assert_eq!(served(a).await, Some(1));
    assert_eq!(served(b).await, None);
}

#[tokio::test]
async fn a_waiter_that_gives_up_as_it_is_served_does_not_lose_the_connection() {
    let s = slots(1, 1);
    let x = open(&s, 7, "a");
    let w = queue(&s, "a");
    s.give_back(x);
    // The client went away with the connection already handed over.
    drop(w);
    assert_eq!(counts(&s), (1, 1, 0));
    assert_eq!(idle(&s, "a").id, 7);
}

#[tokio::test]
async fn a_waiter_that_gives_up_with_a_slot_frees_it() {
    let s = slots(1, 1);
    let x = open(&s, 1, "a");
    let w = queue(&s, "a");
    s.discard(x);
    assert_eq!(counts(&s), (1, 0, 0), "the slot went to the waiter");
    drop(w);
    assert_eq!(counts(&s), (0, 0, 0));
    open(&s, 2, "a");
}

#[tokio::test]
async fn a_timed_out_waiter_leaves_the_queue_and_the_next_return_goes_idle() {
    let s = slots(1, 1);
    let x = open(&s, 1, "a");
    assert!(times_out(&s, "a").await);
    assert_eq!(counts(&s), (1, 0, 0));
    s.give_back(x);
    assert_eq!(counts(&s), (1, 1, 0));
}

#[tokio::test]
async fn a_closed_connection_lets_the_oldest_waiter_open_one() {
    let s = slots(1, 1);
    let x = open(&s, 1, "a");
    let (w1, w2) = (queue(&s, "a"), queue(&s, "b"));
    s.discard(x);
    slot_granted(w1).await;
    assert_eq!(served(w2).await, None);
    assert_eq!(counts(&s), (1, 0, 0));
}

#[tokio::test]
async fn beyond_max_idle_a_returned_connection_is_closed_and_counted() {
    let s = slots(3, 1);
    let (a, b) = (open(&s, 1, "a"), open(&s, 2, "a"));
    s.give_back(a);
    s.give_back(b);
    assert_eq!(counts(&s), (1, 1, 0));
    assert_eq!(PoolStats::get(&s.stats.max_idle_closed), 1);
}

#[tokio::test]
async fn shrinking_below_use_is_repaid_by_returns() {
    let s = slots(4, 4);
    let held = [open(&s, 1, "a"), open(&s, 2, "a"), open(&s, 3, "a")];
    s.resize(1, 4);
    assert!(times_out(&s, "a").await);
    let mut after = Vec::new();
    for c in held {
        s.give_back(c);
        after.push(counts(&s));
    }
    // Two over the limit are closed, the third goes back to the pool.
    assert_eq!(after, [(2, 0, 0), (1, 0, 0), (1, 1, 0)]);
    let d = idle(&s, "a");
    assert!(times_out(&s, "a").await);
    s.give_back(d);
    assert_eq!(counts(&s), (1, 1, 0));
}

#[tokio::test]
async fn shrinking_an_idle_pool_leaves_exactly_the_new_limit() {
    let s = slots(8, 8);
    let conns: Vec<_> = (0..4).map(|i| open(&s, i, "a")).collect();
    let mut conns = conns.into_iter();
    let held = conns.next().expect("four opened");
    conns.for_each(|c| s.give_back(c));
    s.resize(2, 8);
    assert_eq!(s.status().max_open, 2);
    assert_eq!(counts(&s), (2, 1, 0));
    assert_eq!(PoolStats::get(&s.stats.max_idle_closed), 2);
    let second = idle(&s, "a");
    assert!(times_out(&s, "a").await);
    s.give_back(held);
    s.give_back(second);
    assert_eq!(counts(&s), (2, 2, 0));
}

#[tokio::test]
async fn growing_absorbs_the_surplus_before_adding_slots() {
    let s = slots(3, 3);
    let held = [open(&s, 1, "a"), open(&s, 2, "a"), open(&s, 3, "a")];
    s.resize(1, 3); // two over
    s.resize(2, 3); // one over, nothing free
    assert!(times_out(&s, "a").await);
    let mut idle_after = Vec::new();
    for c in held {
        s.give_back(c);
        idle_after.push(s.status().idle);
    }
    assert_eq!(idle_after, [0, 1, 2]);
    s.resize(5, 5);
    // Two idle plus three new ones; the sixth waits.
    idle(&s, "a");
    idle(&s, "a");
    for id in 4..7 {
        open(&s, id, "a");
    }
    assert!(matches!(s.take(&"a".into(), LONG), Ok(Take::Wait(_))));
}

#[tokio::test]
async fn growing_lets_waiters_open_at_once() {
    let s = slots(1, 1);
    let _held = open(&s, 1, "a");
    let w = queue(&s, "a");
    s.resize(2, 1);
    slot_granted(w).await;
    assert_eq!(counts(&s), (2, 0, 0));
}

#[tokio::test]
async fn pruning_closes_refused_then_least_recent_beyond_max_idle() {
    let s = slots(4, 4);
    let conns: Vec<_> = (0..4).map(|i| open(&s, i, "a")).collect();
    conns.into_iter().for_each(|c| s.give_back(c));
    s.resize(4, 2);
    assert_eq!(counts(&s), (2, 2, 0), "resizing trims idle to MaxIdle");
    s.prune(|c| c.id != 3);
    assert_eq!(counts(&s), (1, 1, 0));
    assert_eq!(idle(&s, "a").id, 2);
}

#[tokio::test]
async fn closing_wakes_waiters_and_closes_what_comes_back() {
    let s = slots(1, 1);
    let held = open(&s, 1, "a");
    let w = queue(&s, "a");
    let (woken, ()) = tokio::join!(w.wait(), async {
        tokio::task::yield_now().await;
        s.close();
    });
    assert!(matches!(woken, Err(WaitError::Closed)));
    assert_eq!(s.take(&"a".into(), LONG).err(), Some(Closed));
    s.give_back(held);
    assert_eq!(counts(&s), (0, 0, 0));
}

/// The many-tenant benchmark in miniature: 10 tenants with 4 clients each over a pool of 20,
/// every client always busy. Nearly every checkout finds a connection on its own schema.
#[tokio::test]
async fn hot_tenants_rarely_need_to_switch_schema() {
    let switched = hot_tenants(200, Duration::ZERO).await;
    assert!(
        switched * 10 <= 40 * 200,
        "{switched} of {} checkouts switched schema",
        40 * 200
    );
}

/// The same with transactions long enough that every checkout waits longer than the fixed
/// limits (PASS_OVER_LIMIT, HOLD_LIMIT): a loaded host, or a slow destination.
#[tokio::test]
async fn hot_tenants_rarely_switch_schema_when_every_wait_is_long() {
    let switched = hot_tenants(25, PASS_OVER_LIMIT + HOLD_LIMIT).await;
    assert!(
        switched * 10 <= 40 * 25,
        "{switched} of {} checkouts switched schema",
        40 * 25
    );
}

/// Runs 10 tenants x 4 clients over a pool of 20, each client doing `rounds` transactions
/// of `txn` (yields only when zero), and returns how many checkouts had to switch schema,
/// leaving out the first checkout of each connection.
async fn hot_tenants(rounds: usize, txn: Duration) -> usize {
    let s = Arc::new(Slots::<Dummy>::new(20, 20, Arc::default()));
    let watchdog = tokio::spawn({
        let s = s.clone();
        async move { s.watch().await }
    });
    let clients = (0..40).map(|i| {
        let s = s.clone();
        tokio::spawn(async move {
            let schema: Arc<str> = format!("t{}", i % 10).into();
            let mut switched = 0;
            for _ in 0..rounds {
                let mut conn = match s.take(&schema, LONG).expect("pool open") {
                    Take::Idle(c) => c,
                    Take::Open(r) => {
                        r.fill();
                        Box::new(Dummy {
                            id: 0,
                            schema: None,
                        })
                    }
                    Take::Wait(w) => match w.wait().await.expect("served") {
                        Got::Conn(c) => c,
                        Got::Open(r) => {
                            r.fill();
                            Box::new(Dummy {
                                id: 0,
                                schema: None,
                            })
                        }
                    },
                };
                if conn.schema.as_deref() != Some(&schema) {
                    switched += 1;
                    conn.schema = Some(schema.to_string());
                }
                // A transaction, then the client's next one arrives.
                if txn.is_zero() {
                    tokio::task::yield_now().await;
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(txn).await;
                }
                s.give_back(conn);
                tokio::task::yield_now().await;
            }
            switched
        })
    });
    let mut switched = 0;
    for c in clients.collect::<Vec<_>>() {
        switched += c.await.expect("client task");
    }
    assert_eq!(counts(&s), (20, 20, 0));
    s.close();
    watchdog
        .await
        .expect("the watchdog ends when the pool closes");
    // The first checkout of each of the 20 connections always sets the schema.
    switched - 20
}

#[test]
fn take_idle_prefers_the_schema_and_never_opens_or_queues() {
    let s = slots(3, 3);
    assert!(
        s.take_idle("a").is_none(),
        "nothing idle: no slot, no place in the queue"
    );
    assert_eq!(s.status().open, 0);
    assert_eq!(s.status().waiting, 0);
    let a = open(&s, 1, "a");
    let b = open(&s, 2, "b");
    let c = open(&s, 3, "c");
    s.give_back(a);
    s.give_back(b);
    s.give_back(c);
    assert_eq!(s.take_idle("a").map(|c| c.id), Some(1));
    assert_eq!(
        s.take_idle("x").map(|c| c.id),
        Some(2),
        "else the least recently used"
    );
    assert_eq!(s.take_idle("x").map(|c| c.id), Some(3));
    assert!(s.take_idle("a").is_none());
    s.close();
}

/// In a full pool of two (connection 1 on 'a', 2 on 'b'), a checkout on 'c' queues and 1
/// comes back: it is held idle for 'a'. Returns the waiter, when it queued, and connection 2.
fn hold_a_while_c_waits(s: &Slots<Dummy>) -> (Waiting<'_, Dummy>, Instant, Box<Dummy>) {
    let a = open(s, 1, "a");
    let b = open(s, 2, "b");
    let w = queue(s, "c");
    let queued = Instant::now();
    s.give_back(a);
    assert_eq!(counts(s), (2, 1, 1), "held idle for 'a' while 'c' waits");
    (w, queued, b)
}

#[tokio::test]
async fn a_returned_connection_is_held_for_its_schema_then_rescued_by_a_waiter() {
    let hold = Duration::from_millis(100);
    let s = Slots::with_limits(2, 2, Arc::default(), LONG, hold);
    let (w, queued, b) = hold_a_while_c_waits(&s);
    // A newcomer on yet another schema queues behind the waiter instead of taking it...
    assert!(matches!(s.take(&"x".into(), LONG), Ok(Take::Wait(_))));
    // ...while a client of 'a' takes it at once.
    let a = idle(&s, "a");
    s.give_back(a);
    // Nothing else comes back: the waiter takes the held connection once `hold` is over.
    match watched(&s, w).await {
        Ok(Got::Conn(c)) => assert_eq!(c.id, 1),
        _ => panic!("the waiter takes the held connection"),
    }
    assert!(queued.elapsed() >= hold, "held for its own schema first");
    assert_eq!(counts(&s), (2, 0, 0));
    drop(b);
}

/// When checkouts typically wait longer than the hold limit, a connection is held for its
/// own schema that long instead, and then still goes to the waiter.
#[tokio::test]
async fn the_hold_follows_the_typical_wait() {
    let hold = Duration::from_millis(10);
    let typical = Duration::from_millis(150);
    let s = Slots::with_limits(2, 2, Arc::default(), LONG, hold);
    for _ in 0..100 {
        s.lock().typical_wait.note(typical);
    }
    let (w, queued, b) = hold_a_while_c_waits(&s);
    match watched(&s, w).await {
        Ok(Got::Conn(c)) => assert_eq!(c.id, 1),
        _ => panic!("the waiter takes the held connection"),
    }
    let waited = queued.elapsed();
    assert!(
        waited >= typical * 9 / 10,
        "held about the typical wait, not the {hold:?} limit: {waited:?}"
    );
    drop(b);
}

#[tokio::test]
async fn nothing_is_held_when_no_other_connection_would_come_back() {
    let s = Slots::with_limits(1, 1, Arc::default(), LONG, LONG);
    let a = open(&s, 1, "a");
    let w = queue(&s, "b");
    s.give_back(a);
    assert_eq!(
        served(w).await,
        Some(1),
        "the only connection goes to the waiter"
    );
}

#[tokio::test]
async fn a_held_connection_goes_to_its_schema_waiter_when_one_queues() {
    let s = Slots::with_limits(2, 2, Arc::default(), LONG, LONG);
    let a = open(&s, 1, "a");
    let b = open(&s, 2, "b");
    let wc = queue(&s, "c");
    s.give_back(a);
    // A checkout on 'b' finds nothing of its schema idle and others waiting: it queues, and
    // gets 'b' when it comes back, ahead of the older waiter on 'c'.
    let wb = queue(&s, "b");
    s.give_back(b);
    assert_eq!(served(wb).await, Some(2));
    assert_eq!(counts(&s), (2, 1, 1));
    drop(wc);
    assert_eq!(counts(&s), (2, 1, 0));
}

#[tokio::test]
async fn the_watchdog_expires_only_waiters_past_their_own_limit() {
    let s = slots(1, 1);
    let x = open(&s, 1, "a");
    let patient = queue(&s, "a");
    assert!(times_out(&s, "a").await, "the short limit ran out");
    assert_eq!(counts(&s), (1, 0, 1), "the patient waiter is still queued");
    s.give_back(x);
    assert_eq!(served(patient).await, Some(1));
}
