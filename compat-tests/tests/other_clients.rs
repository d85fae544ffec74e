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

/// A kafka-python group member running in its own process; its lines arrive on a channel.
struct PythonMember {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl PythonMember {
    fn start(broker: &Broker, topic: &str, group: &str, seconds: u32) -> PythonMember {
        use std::io::BufRead;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/group_member.py");
        let mut child = Command::new("python3")
            .args([script, &broker.addr, topic, group, &seconds.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with kafka-python (see .ci/run)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        PythonMember { child, lines }
    }
}

/// Reads members' lines until each holds `per_member` partitions; returns messages seen.
fn wait_for_assignment(members: &mut [PythonMember], per_member: usize) -> Vec<(i32, i64)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    let mut sizes = vec![0usize; members.len()];
    let mut messages = Vec::new();
    while sizes.iter().any(|s| *s != per_member) {
        assert!(
            std::time::Instant::now() < deadline,
            "kafka-python members never settled: {sizes:?}"
        );
        for (i, m) in members.iter_mut().enumerate() {
            while let Ok(line) = m.lines.try_recv() {
                record_line(&line, &mut sizes[i], &mut messages);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    messages
}

fn record_line(line: &str, assigned: &mut usize, messages: &mut Vec<(i32, i64)>) {
    if let Some(list) = line.strip_prefix("assigned ") {
        *assigned = list.split(',').filter(|s| !s.is_empty()).count();
    } else if let Some(m) = line.strip_prefix("msg ") {
        let mut parts = m.split(' ').map(|x| x.parse::<i64>().unwrap_or(-1));
        messages.push((parts.next().unwrap_or(-1) as i32, parts.next().unwrap_or(-1)));
    }
}

/// Waits for every member to exit and collects the rest of their messages.
fn finish(members: Vec<PythonMember>, mut messages: Vec<(i32, i64)>) -> Vec<(i32, i64)> {
    for mut m in members {
        assert!(m.child.wait().expect("wait").success(), "a kafka-python member failed");
        let mut ignored = 0;
        while let Ok(line) = m.lines.recv() {
            record_line(&line, &mut ignored, &mut messages);
        }
    }
    messages
}

fn produce_with_kcat(broker: &Broker, topic: &str, count: usize) {
    let input: String = (0..count).map(|i| format!("k{i}:v{i}\n")).collect();
    let mut producer = Command::new("kcat")
        .args(["-b", &broker.addr, "-P", "-t", topic, "-K:"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat");
    producer
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    assert!(producer.wait().expect("kcat -P").success());
}

#[test]
fn kafka_python_group_shares_a_topic_and_resumes_after_a_broker_crash() {
    let mut broker = Broker::start(&["--group-initial-rebalance-delay-ms", "500", "--num-partitions", "4"]);
    produce_with_kcat(&broker, "pyq", 1); // creates the topic; offset 0
    let mut members = vec![
        PythonMember::start(&broker, "pyq", "pygroup", 20),
        PythonMember::start(&broker, "pyq", "pygroup", 20),
    ];
    let early = wait_for_assignment(&mut members, 2);
    produce_with_kcat(&broker, "pyq", 2000);
    let seen = finish(members, early);
    let unique: std::collections::BTreeSet<(i32, i64)> = seen.iter().copied().collect();
    assert_eq!(unique.len(), 2001, "the group as a whole reads every message");
    assert_eq!(seen.len(), 2001, "and each one once");

    broker.kill9();
    broker.restart();
    produce_with_kcat(&broker, "pyq", 1000);
    let members = vec![PythonMember::start(&broker, "pyq", "pygroup", 15)];
    let after = finish(members, Vec::new());
    assert_eq!(
        after.len(),
        1000,
        "after the crash the group resumes from its commits and reads only the new messages"
    );
}
