//! Tests of probe.rs and http.rs: flags, argv splitting, latency, kept answers, tails.

use super::*;
use crate::sandbox::http::kept_answer;

#[test]
fn probe_flags_parse() {
    assert_eq!(
        Probe::parse_http("8080").unwrap(),
        Probe::Http {
            port: 8080,
            path: "/".into()
        }
    );
    assert_eq!(
        Probe::parse_http("8000/healthz?x=1").unwrap(),
        Probe::Http {
            port: 8000,
            path: "/healthz?x=1".into()
        }
    );
    assert!(Probe::parse_http("0/").is_err());
    assert!(Probe::parse_http("http/").is_err());
    assert_eq!(Probe::parse_tcp("5432").unwrap(), Probe::Tcp { port: 5432 });
    assert!(Probe::parse_tcp("70000").is_err());
}

#[test]
fn commands_split_like_a_shell_would() {
    assert_eq!(
        split_args(r#"app --name 'a b' "c \"d\"" e\ f ''"#),
        vec!["app", "--name", "a b", "c \"d\"", "e f", ""]
    );
}

#[test]
fn latency_is_the_median_and_nearest_rank_p95() {
    let ms = Duration::from_millis;
    assert_eq!(Latency::of(Vec::new()), None);
    let one = Latency::of(vec![ms(7)]).unwrap();
    assert_eq!((one.requests, one.median, one.p95), (1, ms(7), ms(7)));
    // 20 answers, 1..=20 ms, given out of order.
    let times: Vec<Duration> = (1..=20).rev().map(ms).collect();
    let l = Latency::of(times).unwrap();
    assert_eq!((l.requests, l.median, l.p95), (20, ms(10), ms(19)));
}

#[test]
fn a_kept_answer_is_its_status_and_body() {
    let a = kept_answer(200, b"HTTP/1.0 200 OK\r\nDate: x\r\n\r\nhello\nworld");
    let b = kept_answer(
        200,
        b"HTTP/1.0 200 OK\r\nDate: y\r\nServer: z\r\n\r\nhello\nworld",
    );
    assert_eq!(a, b, "headers are not compared");
    assert_eq!((a.bytes, a.start.as_str()), (11, "hello world"));
    assert!(a.digest.starts_with("sha256:") && a.digest.len() == 71);
    assert_ne!(a, kept_answer(200, b"HTTP/1.0 200 OK\r\n\r\nhello\nWorld"));
    assert_eq!(kept_answer(204, b"HTTP/1.0 204 No Content\r\n").bytes, 0);
}

#[test]
fn tail_keeps_the_end() {
    let mut t = Tail::new(4);
    t.push(b"abc");
    t.push(b"def");
    assert_eq!(t.text(), "cdef");
}
