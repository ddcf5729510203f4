//! Crash loop: concurrent writes, overwrites and deletes, `kill -9` at a random
//! moment, restart, and check that the store holds exactly what was acknowledged.
//!
//! Each writer thread owns a fixed set of keys and does one request at a time, so
//! after a kill each key is in a known state (the last acknowledged put or
//! delete), except the one request per thread that was in flight when the process
//! died: its key may hold either the old or the new state, never anything else.
//! Every key of every cycle is checked after every restart, so damage done later
//! to data acknowledged earlier is caught too.
//!
//! 20 cycles by default; `BUTLER_EDGE_SOAK_CYCLES=500 cargo test --test
//! fault_crash_loop -- --nocapture` runs a longer soak.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::server::{KV_CONFIG, Server, client, json_of};

const WRITERS: usize = 8;
const KEYS_PER_WRITER: usize = 150;

/// What the store must hold for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Never written (or deleted): a GET is Butler's 400 "not found".
    Absent,
    Value(String),
    /// The request in flight at the kill: either state is correct.
    EitherOf(Box<Expect>, Box<Expect>),
}

#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    puts_acknowledged: u64,
    deletes_acknowledged: u64,
    in_flight_at_kill: u64,
    in_flight_applied: u64,
    keys_checked: u64,
}

fn namespace(writer: usize) -> String {
    // Spaces and å: the names Sense scripts use, encoded on the wire.
    format!("crash loop å {writer}")
}

fn ns_path(writer: usize) -> String {
    namespace(writer).replace(' ', "%20").replace('å', "%C3%A5")
}

/// One writer's cycle: random puts (new keys and overwrites) and deletes of live
/// keys until the server stops answering. Returns the updated model.
fn write_until_killed(
    port: u16,
    writer: usize,
    cycle: usize,
    mut model: Vec<Expect>,
    stop: &AtomicBool,
    counts: &mut Counts,
) -> Vec<Expect> {
    let http = client();
    let base = format!("http://127.0.0.1:{port}/v4/keyvalues/{}", ns_path(writer));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let index = rand::random_range(0..KEYS_PER_WRITER);
        let key = format!("k{index}");
        let live = matches!(model[index], Expect::Value(_));
        let delete = live && rand::random_range(0..4) == 0;
        n += 1;
        let (next, result) = if delete {
            let sent = http
                .delete(format!("{base}/{key}"))
                .timeout(Duration::from_secs(20))
                .send();
            (Expect::Absent, sent.map(|r| (r.status().as_u16(), 204)))
        } else {
            // 64 bytes and more, unique per cycle and request.
            let value = format!("c{cycle} w{writer} n{n} {}", "x".repeat(48));
            let body = json!({"key": key, "value": value, "ttl": 3_600_000});
            let sent = http
                .post(&base)
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .timeout(Duration::from_secs(20))
                .send();
            (
                Expect::Value(value),
                sent.map(|r| (r.status().as_u16(), 201)),
            )
        };
        match result {
            Ok((status, wanted)) if status == wanted => {
                if delete {
                    counts.deletes_acknowledged += 1;
                } else {
                    counts.puts_acknowledged += 1;
                }
                model[index] = next;
            }
            Ok((status, wanted)) => {
                panic!("writer {writer}: expected {wanted} for {key}, got {status}")
            }
            Err(_) => {
                // The kill cut this request off: it may or may not have been committed.
                counts.in_flight_at_kill += 1;
                let before = std::mem::replace(&mut model[index], Expect::Absent);
                model[index] = Expect::EitherOf(Box::new(before), Box::new(next));
                break;
            }
        }
    }
    model
}

/// Reads every key of a writer back and resolves in-flight entries to what was
/// found. Returns the mismatches.
fn verify(port: u16, writer: usize, model: &mut [Expect], counts: &mut Counts) -> Vec<String> {
    let http = client();
    let mut wrong = Vec::new();
    for (index, expect) in model.iter_mut().enumerate() {
        let url = format!(
            "http://127.0.0.1:{port}/v4/keyvalues/{}?key=k{index}",
            ns_path(writer)
        );
        let (status, body) = json_of(http.get(&url).send().expect("GET after restart"));
        let found = match status {
            200 => Expect::Value(body["value"].as_str().unwrap_or_default().to_string()),
            400 => Expect::Absent,
            other => panic!("GET {url}: unexpected {other} {body}"),
        };
        counts.keys_checked += 1;
        match expect {
            Expect::EitherOf(before, after) => {
                if found == **after && found != **before {
                    counts.in_flight_applied += 1;
                }
                if found != **before && found != **after {
                    wrong.push(format!(
                        "{} k{index}: in flight {before:?} → {after:?}, found {found:?}",
                        namespace(writer)
                    ));
                }
                *expect = found;
            }
            known if *known != found => wrong.push(format!(
                "{} k{index}: acknowledged {known:?}, found {found:?}",
                namespace(writer)
            )),
            _ => {}
        }
    }
    wrong
}

#[test]
fn acknowledged_writes_and_deletes_survive_a_kill_9_loop() {
    let _alone = support::alone();
    let cycles: usize = std::env::var("BUTLER_EDGE_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut server = Server::start(&KV_CONFIG.replace("{max_keys}", "1000000"));
    let mut models: Vec<Vec<Expect>> = vec![vec![Expect::Absent; KEYS_PER_WRITER]; WRITERS];
    let mut total = Counts::default();
    let mut restart_ms = Vec::new();
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let port = server.port;
        let threads: Vec<_> = std::mem::take(&mut models)
            .into_iter()
            .enumerate()
            .map(|(writer, model)| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut counts = Counts::default();
                    let model = write_until_killed(port, writer, cycle, model, &stop, &mut counts);
                    (model, counts)
                })
            })
            .collect();
        // A random moment: sometimes while connections are still opening, mostly
        // in the thick of the load.
        std::thread::sleep(Duration::from_millis(rand::random_range(5..600)));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        let mut cycle_counts = Counts::default();
        for thread in threads {
            let (model, counts) = thread.join().expect("writer thread");
            models.push(model);
            cycle_counts.puts_acknowledged += counts.puts_acknowledged;
            cycle_counts.deletes_acknowledged += counts.deletes_acknowledged;
            cycle_counts.in_flight_at_kill += counts.in_flight_at_kill;
        }

        let restarting = Instant::now();
        server.restart();
        restart_ms.push(restarting.elapsed().as_millis());
        let mut wrong = Vec::new();
        for (writer, model) in models.iter_mut().enumerate() {
            wrong.extend(verify(server.port, writer, model, &mut cycle_counts));
        }
        println!(
            "cycle {cycle:>3}: {:>5} puts and {:>4} deletes acknowledged, {} in flight at the kill \
             ({} of them applied), {} keys checked, {} wrong",
            cycle_counts.puts_acknowledged,
            cycle_counts.deletes_acknowledged,
            cycle_counts.in_flight_at_kill,
            cycle_counts.in_flight_applied,
            cycle_counts.keys_checked,
            wrong.len()
        );
        assert!(
            wrong.is_empty(),
            "cycle {cycle}: the store does not hold what was acknowledged:\n{}\nlog:\n{}",
            wrong.join("\n"),
            server.log()
        );
        total.puts_acknowledged += cycle_counts.puts_acknowledged;
        total.deletes_acknowledged += cycle_counts.deletes_acknowledged;
        total.in_flight_at_kill += cycle_counts.in_flight_at_kill;
        total.in_flight_applied += cycle_counts.in_flight_applied;
        total.keys_checked += cycle_counts.keys_checked;
    }
    // The database opened every time without a repair message or error.
    let log = server.log().to_lowercase();
    assert!(
        !log.contains("repair") && !log.contains("error"),
        "{}",
        server.log()
    );
    restart_ms.sort_unstable();
    println!(
        "crash loop: {cycles} kill -9 cycles, {} puts and {} deletes acknowledged, all found as \
         acknowledged; {} requests in flight at a kill ({} applied, the rest not); {} key reads \
         checked; restart to listening median {} ms, max {} ms",
        total.puts_acknowledged,
        total.deletes_acknowledged,
        total.in_flight_at_kill,
        total.in_flight_applied,
        total.keys_checked,
        restart_ms[restart_ms.len() / 2],
        restart_ms[restart_ms.len() - 1]
    );
    assert!(
        total.puts_acknowledged > 100 && total.deletes_acknowledged > 10,
        "the load was too light to test anything"
    );
}
