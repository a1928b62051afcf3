//! Tables and scenarios for the balancing algorithms, the statistics and reloads.

use super::*;
use crate::config::Config;
use crate::health::Transition;
use crate::random::Rng;
use std::net::Ipv4Addr;

fn balancer(capacities: &[u32], algorithm: Algorithm) -> Balancer {
    let text: String = capacities
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "[[backends]]\nurl = \"http://127.0.0.1:{}\"\ncapacity = {c}\n",
                9000 + i
            )
        })
        .collect();
    let config = Config::parse(&text).unwrap();
    Balancer::with_rng(&config.backends, algorithm, 2, 3, Rng::with_seed(42))
}

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const NONE: Tried = Tried::NONE;

fn pick(b: &mut Balancer, client: IpAddr, tried: Tried) -> Option<usize> {
    // The request the pick started is dropped at once: the counts stay as the test set them.
    match b.pick(0, client, tried, None) {
        Pick::Started(inflight) => Some(inflight.backend().slot),
        Pick::Full | Pick::None => None,
    }
}

fn picks(b: &mut Balancer, n: usize) -> Vec<usize> {
    (0..n).map(|_| pick(b, CLIENT, NONE).unwrap()).collect()
}

fn counts(b: &mut Balancer, n: usize) -> Vec<usize> {
    let mut counts = vec![0; b.slots()];
    for i in picks(b, n) {
        counts[i] += 1;
    }
    counts
}

fn backend(b: &Balancer, slot: usize) -> Arc<Backend> {
    b.get(slot).unwrap().clone()
}

fn observe(b: &Balancer, slot: usize, success: bool) -> Option<Transition> {
    backend(b, slot).observe(success, "test")
}

fn mark_down(b: &mut Balancer, index: usize) {
    for _ in 0..3 {
        observe(b, index, false);
    }
    assert!(!backend(b, index).healthy());
}

/// Puts `n` requests in flight on `slot` (held by the returned guards).
fn load(b: &Balancer, slot: usize, n: usize) -> Vec<InFlight> {
    (0..n).map(|_| backend(b, slot).start()).collect()
}

fn succeed(b: &Balancer, slot: usize, latency: Duration) {
    backend(b, slot)
        .start()
        .finish(Outcome::Success { latency }, "test");
}

#[test]
fn round_robin_skips_unavailable_and_tried() {
    let mut b = balancer(&[1, 1, 1], Algorithm::RoundRobin);
    assert_eq!(picks(&mut b, 6), [0, 1, 2, 0, 1, 2]);
    mark_down(&mut b, 1);
    assert_eq!(picks(&mut b, 4), [0, 2, 0, 2]);
    assert_eq!(pick(&mut b, CLIENT, Tried::default().with(0)), Some(2));
    backend(&b, 0).set_enabled(false);
    mark_down(&mut b, 2);
    assert_eq!(pick(&mut b, CLIENT, NONE), None);
}

/// A reload that shrinks the pool below the round-robin position carries on from that position
/// wrapped, rather than picking outside the pool or stopping.
#[test]
fn round_robin_carries_on_when_a_reload_shrinks_the_pool() {
    let mut b = balancer(&[1, 1, 1, 1], Algorithm::RoundRobin);
    assert_eq!(picks(&mut b, 3), [0, 1, 2]);
    let text = "[[backends]]\nurl = \"http://127.0.0.1:9000\"\n[[backends]]\nurl = \"http://127.0.0.1:9001\"\n";
    let config = Config::parse(text).unwrap();
    let pools = pool::single("default", Algorithm::RoundRobin, config.backends.len());
    let changes = b.reconfigure(&config.backends, &pools, 2, 3);
    b.retire(&changes.removed);
    // The position was 3; in a pool of two that is its second member.
    assert_eq!(picks(&mut b, 4), [1, 0, 1, 0]);
}

#[test]
fn smooth_weighted_order() {
    let mut b = balancer(&[5, 1, 1], Algorithm::WeightedRoundRobin);
    assert_eq!(picks(&mut b, 7), [0, 0, 1, 0, 2, 0, 0]);
    assert_eq!(picks(&mut b, 7), [0, 0, 1, 0, 2, 0, 0], "the cycle repeats");
    let mut b = balancer(&[3, 1], Algorithm::WeightedRoundRobin);
    assert_eq!(
        counts(&mut b, 400),
        [300, 100],
        "exact proportions over whole cycles"
    );
    mark_down(&mut b, 0);
    assert_eq!(picks(&mut b, 3), [1, 1, 1]);
}

#[test]
fn least_connections_weighs_by_capacity_and_rotates_ties() {
    let mut b = balancer(&[1, 1, 2], Algorithm::LeastConnections);
    // All idle: ties rotate.
    assert_eq!(picks(&mut b, 3), [0, 1, 2]);
    let _a = load(&b, 0, 2);
    let mut one = load(&b, 1, 1);
    let _c = load(&b, 2, 3); // 1.5 per unit of capacity
    assert_eq!(pick(&mut b, CLIENT, NONE), Some(1));
    one.extend(load(&b, 1, 1)); // now 0: 2, 1: 2, 2: 1.5
    assert_eq!(pick(&mut b, CLIENT, NONE), Some(2));
    drop(one);
    assert_eq!(
        backend(&b, 1).active(),
        0,
        "dropped guards leave the counts"
    );
    // Requests started through the balancer count.
    let mut b = balancer(&[1, 1], Algorithm::LeastConnections);
    let Pick::Started(first) = b.pick(0, CLIENT, NONE, None) else {
        panic!("a backend")
    };
    let Pick::Started(second) = b.pick(0, CLIENT, NONE, None) else {
        panic!("a backend")
    };
    assert_ne!(
        first.backend().slot,
        second.backend().slot,
        "the busy backend is avoided"
    );
}

#[test]
fn least_latency_prefers_fast_and_tries_new_backends_first() {
    let mut b = balancer(&[1, 1, 1], Algorithm::LeastLatency);
    let ms = Duration::from_millis;
    for (i, latency) in [(0, ms(50)), (1, ms(5))] {
        succeed(&b, i, latency);
    }
    assert_eq!(
        pick(&mut b, CLIENT, NONE),
        Some(2),
        "unsampled backend goes first"
    );
    succeed(&b, 2, ms(20));
    assert_eq!(counts(&mut b, 10), [0, 10, 0], "then the fastest");
    // Load scales the score: 5ms with 9 waiting loses to 20ms with none.
    let waiting = load(&b, 1, 9);
    assert_eq!(pick(&mut b, CLIENT, NONE), Some(2));
    // A recovered backend is measured afresh and tried first.
    drop(waiting);
    mark_down(&mut b, 0);
    observe(&b, 0, true);
    observe(&b, 0, true);
    assert!(backend(&b, 0).healthy());
    assert_eq!(backend(&b, 0).latency_ewma(), None);
    assert_eq!(pick(&mut b, CLIENT, NONE), Some(0));
}

#[test]
fn latency_average_moves_toward_new_samples() {
    let b = balancer(&[1], Algorithm::LeastLatency);
    succeed(&b, 0, Duration::from_millis(10));
    succeed(&b, 0, Duration::from_millis(20));
    let avg = backend(&b, 0).latency_ewma().unwrap().as_secs_f64() * 1e3;
    assert!((avg - 13.0).abs() < 1e-6, "{avg}");
}

#[test]
fn power_of_two_avoids_the_loaded_backend() {
    let mut b = balancer(&[1, 1, 1, 1], Algorithm::PowerOfTwo);
    let even = counts(&mut b, 40_000);
    for c in &even {
        assert!(
            (9_000..11_000).contains(c),
            "idle backends share evenly: {even:?}"
        );
    }
    let _busy = load(&b, 3, 100);
    let loaded = counts(&mut b, 30_000);
    assert_eq!(
        loaded[3], 0,
        "the loaded backend never wins a pair: {loaded:?}"
    );
    let mut single = balancer(&[1, 1], Algorithm::PowerOfTwo);
    mark_down(&mut single, 0);
    assert_eq!(picks(&mut single, 3), [1, 1, 1]);
    mark_down(&mut single, 1);
    assert_eq!(pick(&mut single, CLIENT, NONE), None);
}

#[test]
fn random_follows_capacity() {
    let mut b = balancer(&[1, 2, 7], Algorithm::Random);
    let c = counts(&mut b, 100_000);
    let expected = [10_000.0, 20_000.0, 70_000.0];
    for (got, want) in c.iter().zip(expected) {
        assert!((*got as f64 - want).abs() < want * 0.05, "within 5%: {c:?}");
    }
    mark_down(&mut b, 2);
    let c = counts(&mut b, 30_000);
    assert_eq!(c[2], 0);
    assert!((c[1] as f64 / c[0] as f64 - 2.0).abs() < 0.2, "{c:?}");
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

#[test]
fn ip_hash_is_sticky_weighted_and_remaps_minimally() {
    let mut b = balancer(&[1, 1, 1, 1], Algorithm::IpHash);
    let before: Vec<usize> = (0..4000)
        .map(|i| pick(&mut b, client(i), NONE).unwrap())
        .collect();
    let again: Vec<usize> = (0..4000)
        .map(|i| pick(&mut b, client(i), NONE).unwrap())
        .collect();
    assert_eq!(before, again, "the same client keeps its backend");
    let mut share = [0usize; 4];
    for &i in &before {
        share[i] += 1;
    }
    for s in share {
        assert!(
            (850..1150).contains(&s),
            "even spread within 15%: {share:?}"
        );
    }
    // Backend 2 goes down: only its clients move, and they spread over the other three.
    mark_down(&mut b, 2);
    let after: Vec<usize> = (0..4000)
        .map(|i| pick(&mut b, client(i), NONE).unwrap())
        .collect();
    let mut moved_to = [0usize; 4];
    for (x, y) in before.iter().zip(&after) {
        if x == y {
            continue;
        }
        assert_eq!(*x, 2, "a client of a healthy backend moved");
        moved_to[*y] += 1;
    }
    assert_eq!(moved_to.iter().sum::<usize>(), share[2]);
    for (i, m) in moved_to.iter().enumerate() {
        if i != 2 {
            assert!(*m > share[2] / 6, "orphans spread: {moved_to:?}");
        }
    }
    // It recovers: everyone is back where they were.
    observe(&b, 2, true);
    observe(&b, 2, true);
    let back: Vec<usize> = (0..4000)
        .map(|i| pick(&mut b, client(i), NONE).unwrap())
        .collect();
    assert_eq!(back, before);
}

#[test]
fn ip_hash_follows_capacity_and_treats_mapped_v4_as_v4() {
    let mut b = balancer(&[3, 1], Algorithm::IpHash);
    let mut share = [0usize; 2];
    for i in 0..8000 {
        share[pick(&mut b, client(i), NONE).unwrap()] += 1;
    }
    assert!((5700..6300).contains(&share[0]), "3:1 within 5%: {share:?}");
    let v4: IpAddr = "192.0.2.1".parse().unwrap();
    let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
    assert_eq!(pick(&mut b, v4, NONE), pick(&mut b, mapped, NONE));
}

#[test]
fn stats_add_up_and_failures_take_a_backend_down() {
    let mut b = balancer(&[1], Algorithm::RoundRobin);
    let only = backend(&b, 0);
    let mut flights = load(&b, 0, 3);
    assert_eq!(only.active(), 3);
    let ms = Duration::from_millis;
    flights
        .remove(0)
        .finish(Outcome::Success { latency: ms(10) }, "test");
    flights
        .remove(0)
        .finish(Outcome::ErrorResponse { latency: ms(1) }, "test");
    flights.remove(0).finish(Outcome::Failure, "test");
    drop(only.clone().start()); // abandoned: taken back out
    let s = only.stats();
    assert_eq!((s.requests, s.successes, s.errors), (3, 1, 2));
    assert_eq!(s.requests, s.successes + s.errors);
    assert_eq!(s.average_latency(), ms(10));
    assert_eq!(only.active(), 0);
    // A 5xx answer is not a health failure; connection failures are.
    assert!(only.healthy());
    only.clone().start().finish(Outcome::Failure, "test");
    assert!(only.healthy());
    only.clone().start().finish(Outcome::Failure, "test");
    assert!(!only.healthy(), "down after fall = 3 failures in a row");
    assert_eq!(pick(&mut b, CLIENT, NONE), None);
    let snap = &b.snapshot()[0];
    assert_eq!(
        (snap.request_count, snap.success_count, snap.error_count),
        (5, 1, 4)
    );
    assert!(!snap.healthy);
    assert_eq!(observe(&b, 0, true), None);
    assert_eq!(observe(&b, 0, true), Some(Transition::Up));
}

#[test]
fn workers_count_in_their_own_tallies_and_the_figures_add_them_up() {
    let config =
        Config::parse("workers = 2\n[[backends]]\nurl = \"http://127.0.0.1:9000\"\n").unwrap();
    let shared = Balancer::from_config(&config);
    let mut workers = [shared.share(0), shared.share(1)];
    let ms = Duration::from_millis;
    // (worker, outcome): each worker's requests, ended on its own balancer's guards.
    let cases = [
        (0, Some(Outcome::Success { latency: ms(2) })),
        (1, Some(Outcome::Success { latency: ms(4) })),
        (1, Some(Outcome::ErrorResponse { latency: ms(30) })),
        (0, Some(Outcome::Failure)),
        // Abandoned: taken back out of the worker's tally it was counted in.
        (1, None),
    ];
    for (worker, outcome) in cases {
        let Pick::Started(mut inflight) = workers[worker].pick(0, CLIENT, NONE, None) else {
            panic!("worker {worker} found no backend");
        };
        assert_eq!(inflight.tally, worker as u16 + 1);
        if let Some(outcome) = outcome {
            inflight.finish(outcome, "test");
        }
    }
    // A retry on a new connection is counted again in the same tally; the guard it replaces is not.
    let Pick::Started(first) = workers[1].pick(0, CLIENT, NONE, None) else {
        panic!("no backend");
    };
    let mut retry = first.again();
    drop(first);
    assert_eq!(retry.tally, 2);
    retry.finish(Outcome::Success { latency: ms(6) }, "test");

    let only = backend(&shared, 0);
    let s = only.stats();
    assert_eq!((s.requests, s.successes, s.errors), (5, 3, 2));
    assert_eq!(s.total_latency, ms(12));
    assert_eq!(only.active(), 0);
    let times = only.response_times();
    assert_eq!((times.count(), times.sum_us), (4, 42_000));
    let per_tally: Vec<u64> = only
        .state
        .tallies
        .iter()
        .map(|t| t.requests.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    assert_eq!(
        per_tally,
        [0, 2, 3],
        "the shared tally, then worker 0's and 1's"
    );
    // A balancer not made for workers counts in the shared tally.
    let mut plain = balancer(&[1], Algorithm::RoundRobin);
    let Pick::Started(inflight) = plain.pick(0, CLIENT, NONE, None) else {
        panic!("no backend");
    };
    assert_eq!(inflight.tally, 0);
}

#[test]
fn reconfigure_keeps_figures_of_kept_backends() {
    let mut b = balancer(&[1, 1, 1], Algorithm::RoundRobin);
    succeed(&b, 1, Duration::from_millis(1));
    backend(&b, 1).set_capacity(9); // set at run time
    let text = "[[backends]]\nurl = \"http://127.0.0.1:9001\"\n[[backends]]\nurl = \"http://127.0.0.1:9005\"\ncapacity = 2\n\
                    [[backends]]\nurl = \"http://127.0.0.1:9000\"\ncapacity = 4\n";
    let config = Config::parse(text).unwrap();
    let pools = pool::single(
        "default",
        Algorithm::LeastConnections,
        config.backends.len(),
    );
    let changes = b.reconfigure(&config.backends, &pools, 2, 3);
    b.retire(&changes.removed);
    assert_eq!(changes.added, [3]);
    assert_eq!(changes.removed, [2]);
    assert_eq!(b.configured(), [1, 3, 0]);
    assert_eq!(b.algorithm(), Algorithm::LeastConnections);
    let snap = b.snapshot();
    assert_eq!(snap[0].url, "http://127.0.0.1:9001");
    assert_eq!(
        (snap[0].request_count, snap[0].capacity),
        (1, 9),
        "kept: figures and run-time capacity"
    );
    assert_eq!(snap[2].capacity, 4, "the file changed this capacity");
    assert!(!backend(&b, 2).available(), "removed slots get no requests");
    let picks: Vec<_> = (0..6)
        .map(|_| pick(&mut b, CLIENT, NONE).unwrap())
        .collect();
    assert!(!picks.contains(&2));
    // Configured again: a fresh start in its old slot.
    let config = Config::parse("[[backends]]\nurl = \"http://127.0.0.1:9002\"\n").unwrap();
    let changes = b.reconfigure(&config.backends, &config.pools, 2, 3);
    b.retire(&changes.removed);
    assert_eq!(changes.added, [2]);
    assert_eq!(changes.removed, [1, 3, 0]);
    assert_eq!(pick(&mut b, CLIENT, NONE), Some(2));
}

#[test]
fn tried_set() {
    let t = Tried::default().with(0).with(5).with(70);
    assert!(t.contains(0) && t.contains(5) && t.contains(70));
    assert!(!t.contains(1) && !t.contains(64) && !Tried::NONE.contains(0));
    // The last KEPT are kept, whatever their numbers.
    let many = (100..100 + Tried::KEPT + 2).fold(Tried::NONE, Tried::with);
    assert!(!many.contains(100) && !many.contains(101));
    assert!((102..102 + Tried::KEPT).all(|s| many.contains(s)));
}
