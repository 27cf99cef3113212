//! Unit tests of the limiter's table (no Python).

use super::*;

const K: &str = "key_1";
const M: &str = "key_1|m";

fn lim(rpm: Option<i64>, tpm: Option<i64>, par: Option<i64>) -> Limits {
    Limits { rpm, tpm, max_parallel: par }
}

#[test]
fn exact_window_and_retry() {
    let mut c = Core::default();
    let l = lim(Some(2), Some(1000), None);
    let a = c.acquire(&[(K, l)], 300, 0).unwrap();
    c.settle(&a, 250, 10);
    c.acquire(&[(K, l)], 300, 1500).unwrap();
    let r = c.acquire(&[(K, l)], 0, 30_000).unwrap_err();
    assert_eq!((r.kind, r.retry_after_ms, r.value, r.remaining), (Kind::Requests, WINDOW_MS - 30_000, 2, 0));
    assert!(c.acquire(&[(K, l)], 0, WINDOW_MS - 1).is_err());
    assert!(c.acquire(&[(K, l)], 0, WINDOW_MS).is_ok());
    let s = c.state(K, &l, WINDOW_MS);
    assert_eq!((s.requests_in_window, s.tokens_in_window, s.in_flight), (2, 300, 2));
}

#[test]
fn all_or_none_and_the_limit_that_frees_last() {
    let mut c = Core::default();
    let (key, model) = (lim(Some(10), Some(10_000), Some(5)), lim(Some(1), None, None));
    let p = c.acquire(&[(K, key), (M, model)], 100, 0).unwrap();
    c.settle(&p, 100, 1);
    let r = c.acquire(&[(K, key), (M, model)], 100, 5).unwrap_err();
    assert_eq!((r.at, r.kind, r.retry_after_ms), (1, Kind::Requests, WINDOW_MS - 5));
    assert_eq!(c.state(K, &key, 5).requests_in_window, 1);
    assert_eq!(r.requests, Some(Win { at: 1, limit: 1, remaining: 0, reset_ms: WINDOW_MS - 5 }));
}

#[test]
fn release_drop_and_a_forgotten_bucket() {
    let mut c = Core::default();
    let l = lim(None, Some(1000), Some(1));
    let p = c.acquire(&[(K, l)], 700, 0).unwrap();
    assert_eq!(c.acquire(&[(K, l)], 0, 0).unwrap_err().kind, Kind::Parallel);
    c.release(&p);
    assert_eq!(c.state(K, &l, 0).tokens_in_window, 0);
    let q = c.acquire(&[(K, l)], 50_000, 0).unwrap(); // larger than tpm: reserves tpm
    assert_eq!(c.state(K, &l, 0).tokens_in_window, 1000);
    c.dropped(&q);
    let s = c.state(K, &l, 0);
    assert_eq!((s.in_flight, s.tokens_in_window), (0, 1000));
    c.forget(K);
    let fresh = c.acquire(&[(K, l)], 1, 0).unwrap();
    c.release(&q); // on the forgotten bucket: nothing
    assert_eq!(c.state(K, &l, 0).in_flight, 1);
    c.settle(&fresh, 0, 0);
    assert_eq!(c.len(), 1);
}

#[test]
fn settle_after_the_entry_left_the_window() {
    let mut c = Core::default();
    let l = lim(None, Some(1000), None);
    let p = c.acquire(&[(K, l)], 800, 0).unwrap();
    let later = c.acquire(&[(K, l)], 100, WINDOW_MS - 1).unwrap();
    c.settle(&p, 5000, WINDOW_MS + 10);
    assert_eq!(c.state(K, &l, WINDOW_MS + 10).tokens_in_window, 100);
    c.release(&later);
    assert_eq!(c.state(K, &l, WINDOW_MS + 10).tokens_in_window, 0);
}

#[test]
fn idle_buckets_are_swept() {
    let mut c = Core::default();
    let l = lim(Some(5), None, Some(3));
    for i in 0..1000 {
        let id = format!("key_{i}");
        let p = c.acquire(&[(id.as_str(), l)], 10, 0).unwrap();
        c.settle(&p, 10, 0);
    }
    let busy = c.acquire(&[("busy", l)], 0, 0).unwrap();
    let hot = lim(Some(100), None, None);
    for i in 0..1000 {
        let p = c.acquire(&[("hot", hot)], 0, WINDOW_MS + i * 1000).unwrap();
        c.settle(&p, 0, WINDOW_MS + i * 1000);
    }
    let ids: Vec<String> = c.bucket_ids().iter().map(|s| s.to_string()).collect();
    assert_eq!(ids, vec!["busy".to_string(), "hot".to_string()]);
    c.settle(&busy, 0, 2 * WINDOW_MS);
}
