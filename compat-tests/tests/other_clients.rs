//! Clients other than the rdkafka crate, run as a user runs them: kcat, kafka-python
//! and confluent-kafka (.ci/run installs all three).

use std::io::Write;
use std::process::{Command, Stdio};

use compat_tests::Broker;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? see .ci/run)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kcat_lists_produces_and_consumes() {
    let broker = Broker::start(&[]);
    let input: String = (0..200).map(|i| format!("key{}:value {i}\n", i % 5)).collect();
    let mut producer = Command::new("kcat")
        .args(["-b", &broker.addr, "-P", "-t", "kcat-topic", "-K:"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat is installed (see .ci/run)");
    producer
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    assert!(producer.wait().expect("kcat -P").success());

    let listing = run(Command::new("kcat").args(["-b", &broker.addr, "-L"]));
    assert!(listing.contains("1 brokers:"), "{listing}");
    assert!(listing.contains(&format!("broker 1 at {}", broker.addr)), "{listing}");
    assert!(listing.contains("topic \"kcat-topic\" with 1 partitions"), "{listing}");

    let consumed = run(Command::new("kcat").args([
        "-b",
        &broker.addr,
        "-C",
        "-t",
        "kcat-topic",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%k:%s\n",
    ]));
    assert_eq!(consumed, input);
}

fn python_round_trip(client: &str) {
    let broker = Broker::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/round_trip.py");
    let out = run(Command::new("python3").args([script, client, &broker.addr, &format!("py-{client}")]));
    assert!(out.contains("500 messages round-tripped"), "{out}");
}

#[test]
fn kafka_python_produces_and_consumes() {
    python_round_trip("kafka-python");
}

#[test]
fn confluent_kafka_produces_and_consumes() {
    python_round_trip("confluent-kafka");
}
