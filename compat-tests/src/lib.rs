//! Test harness: starts the real `sluice` binary on an ephemeral port with its own data
//! directory, and speaks raw Kafka protocol where a test needs exact control. Imports
//! no workspace library: tests see only the binary and the wire.

pub mod history;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// The `sluice` binary: `SLUICE_BIN`, or the one cargo built beside this test.
pub fn sluice_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(bin);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/sluice
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = profile_dir.join("sluice");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace` (it builds the broker)",
        bin.display()
    );
    bin
}

/// Whether files under `dir` take O_DIRECT, as the broker's start-up probe asks (an
/// aligned 4 KiB write with O_DIRECT); tests of direct I/O say so and skip where not.
pub fn direct_io_available(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(".compat-direct-probe");
    let written = (|| -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)?;
        // An aligned buffer without unsafe code: a 4 KiB-aligned window of a larger one.
        let buf = vec![0u8; 8192];
        let start = (4096 - buf.as_ptr() as usize % 4096) % 4096;
        std::os::unix::fs::FileExt::write_all_at(&file, &buf[start..start + 4096], 0)
    })();
    let _ = std::fs::remove_file(&path);
    written.is_ok()
}

/// The record batches of a segment file's contents: with direct I/O the file of an
/// open segment ends in less than one 4 KiB block of zero padding (rewritten by the next
/// append, cut when the segment is closed), which is not log data.
pub fn log_bytes(file: &[u8]) -> &[u8] {
    let mut end = 0usize;
    while end + 12 <= file.len() {
        let length = i32::from_be_bytes([file[end + 8], file[end + 9], file[end + 10], file[end + 11]]);
        if length <= 0 || end + 12 + length as usize > file.len() {
            break;
        }
        end += 12 + length as usize;
    }
    let rest = &file[end..];
    assert!(
        rest.len() < 4096 && rest.iter().all(|&b| b == 0),
        "a segment file ends in {} bytes that are neither batches nor block padding",
        rest.len()
    );
    &file[..end]
}

/// A running broker. Dropping it kills the process.
/// A filesystem mounted for one test (ramfs, a small tmpfs), unmounted when dropped.
pub struct Mount(tempfile::TempDir);

impl Mount {
    /// Mounts `fstype` (with `-o options` when given) on a fresh directory; None when
    /// this process may not mount (not root): the test then says so and skips.
    pub fn new(fstype: &str, options: Option<&str>) -> Option<Mount> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut mount = Command::new("mount");
        mount.args(["-t", fstype]);
        if let Some(options) = options {
            mount.args(["-o", options]);
        }
        let mounted = mount
            .arg("none")
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Mount(dir))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

pub struct Broker {
    child: Option<Child>,
    pub addr: String,
    /// host:port of the Prometheus endpoint.
    pub metrics_addr: String,
    data: tempfile::TempDir,
    args: Vec<String>,
    /// The network namespace the broker runs in (`ip netns exec`), if not the test's.
    netns: Option<String>,
    /// A command the broker runs under (e.g. `prlimit --nofile=…`), if any.
    wrapper: Vec<String>,
}

impl Broker {
    /// Starts a broker with 2 shards (so cross-shard paths run) and `extra` flags.
    pub fn start(extra: &[&str]) -> Broker {
        Broker::start_in(None, "127.0.0.1", extra)
    }

    /// Starts a broker listening on `ip` (a free port), inside network namespace
    /// `netns` when given.
    pub fn start_in(netns: Option<&str>, ip: &str, extra: &[&str]) -> Broker {
        let data = tempfile::tempdir().expect("temp dir");
        Broker::launch(data, netns, &[], ip, extra)
    }

    /// Starts a broker under `wrapper` (a command that then runs sluice, such as
    /// `prlimit --nofile=300:300`), with `extra` flags.
    pub fn start_under(wrapper: &[&str], extra: &[&str]) -> Broker {
        let data = tempfile::tempdir().expect("temp dir");
        Broker::launch(data, None, wrapper, "127.0.0.1", extra)
    }

    /// Starts a broker whose data directory is made under `parent` (another
    /// filesystem, such as a ramfs), with `extra` flags.
    pub fn start_with_data_in(parent: &Path, extra: &[&str]) -> Broker {
        let data = tempfile::tempdir_in(parent).expect("temp dir");
        Broker::launch(data, None, &[], "127.0.0.1", extra)
    }

    fn launch(data: tempfile::TempDir, netns: Option<&str>, wrapper: &[&str], ip: &str, extra: &[&str]) -> Broker {
        let mut broker = Broker {
            child: None,
            addr: String::new(),
            metrics_addr: String::new(),
            data,
            args: extra.iter().map(|s| s.to_string()).collect(),
            netns: netns.map(str::to_string),
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
        };
        broker.spawn(&format!("{ip}:{}", free_port_on(ip)));
        broker
    }

    /// The value of one series in the broker's scrape (`name` or `name{labels}`
    /// exactly as exported), None when the scrape has no such line.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = http_get(&self.metrics_addr, "/metrics").ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Bytes of a partition's segment files (`<topic>-<partition>`) on disk now: the
    /// record batches they hold, without the zeros direct I/O pads an open segment's
    /// last block with (see [`log_bytes`]).
    pub fn partition_log_bytes(&self, partition_dir: &str) -> u64 {
        std::fs::read_dir(self.data.path().join("data").join(partition_dir))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .map(|bytes| log_bytes(&bytes).len() as u64)
                    .sum()
            })
            .unwrap_or(0)
    }

    fn spawn(&mut self, listen: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("broker.log"))
            .expect("broker log");
        let mut command = match (&self.netns, self.wrapper.split_first()) {
            (Some(ns), _) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(sluice_bin());
                c
            }
            (None, Some((program, args))) => {
                let mut c = Command::new(program);
                c.args(args).arg(sluice_bin());
                c
            }
            (None, None) => Command::new(sluice_bin()),
        };
        let mut child = command
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(self.data.path().join("data"))
            .arg("--shards")
            .arg("2")
            .arg("--metrics-addr")
            .arg("127.0.0.1:0")
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start sluice");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("sluice listening on ") {
                    let _ = tx.send(("kafka", addr.to_string()));
                }
                if let Some(addr) = line.strip_prefix("sluice metrics on ") {
                    let _ = tx.send(("metrics", addr.to_string()));
                }
            }
        });
        for _ in 0..2 {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(("kafka", addr)) => self.addr = addr,
                Ok((_, addr)) => self.metrics_addr = addr,
                Err(_) => {
                    let _ = child.kill();
                    panic!("sluice did not start; log:\n{}", self.log());
                }
            }
        }
        self.child = Some(child);
    }

    /// The broker's stderr so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("broker.log")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Starts the broker again on the same address and data.
    /// Restarts with `extra` flags in place of the ones it was started with.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.args = extra.iter().map(|s| s.to_string()).collect();
        self.restart();
    }

    pub fn restart(&mut self) {
        self.kill9();
        let addr = self.addr.clone();
        self.spawn(&addr);
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Broker {
    /// Starts a broker that must refuse to start; returns its stderr. Fails the test
    /// if it is still running after 30 s or exits successfully.
    pub fn start_refused(extra: &[&str]) -> String {
        let data = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(sluice_bin())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
                "--shards",
                "1",
            ])
            .arg("--data-dir")
            .arg(data.path().join("data"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                assert!(!status.success(), "sluice should have refused to start:\n{err}");
                return err;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("sluice should have refused to start, but it is running");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// A real etcd (Debian's `etcd-server`) on free loopback ports with its own data
/// directory. Dropping it kills the process.
pub struct Etcd {
    child: Option<Child>,
    /// host:port of the client endpoint.
    pub endpoint: String,
    _data: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        Etcd::start_on("127.0.0.1")
    }

    /// An etcd whose client endpoint is on `ip` (its peer endpoint stays on loopback).
    ///
    /// A port picked free can be taken by another process before etcd binds it; then
    /// etcd exits, and whatever holds the port may even answer. So etcd counts as up
    /// only when it is alive, answers `/health`, and has created its own database
    /// (which it does only after binding both its listeners); otherwise it is started
    /// again on fresh ports.
    pub fn start_on(ip: &str) -> Etcd {
        for _ in 0..5 {
            if let Some(etcd) = Etcd::try_start_on(ip) {
                return etcd;
            }
        }
        panic!("etcd did not start on {ip} in five attempts");
    }

    fn try_start_on(ip: &str) -> Option<Etcd> {
        let data = tempfile::tempdir().expect("temp dir");
        let (client, peer) = (free_port_on(ip), free_port());
        let endpoint = format!("{ip}:{client}");
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(data.path().join("etcd"))
            .args(["--listen-client-urls", &format!("http://{endpoint}")])
            .args(["--advertise-client-urls", &format!("http://{endpoint}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer}")])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is installed (Debian etcd-server; see .ci/run)");
        let db = data.path().join("etcd/member/snap/db");
        let mut etcd = Etcd {
            child: Some(child),
            endpoint,
            _data: data,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let running = matches!(etcd.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)));
            if !running {
                return None;
            }
            if db.exists() && healthy(&etcd.endpoint) {
                return Some(etcd);
            }
            assert!(std::time::Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `--controller` URL for a cluster under `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.endpoint)
    }

    /// SIGSTOP: etcd stops answering, its connections stay open (an unreachable etcd).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Etcd::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").arg(sig).arg(child.id().to_string()).status();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether the etcd at `endpoint` answers `GET /health` with `"health":"true"`.
fn healthy(endpoint: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(endpoint) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: {endpoint}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}

/// A port nothing listens on, below Linux's ephemeral range (32768-60999): a broker
/// restarted on its old port must find it free, and a port the kernel hands out as the
/// source port of some outgoing connection (there are many in cluster tests) would not
/// be. Random, so tests running in parallel rarely try the same one.
pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

pub fn free_port_on(ip: &str) -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<(String, u16)>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ ((std::process::id() as u64) << 32);
    for attempt in 0..1000u64 {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let mut x = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ attempt;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        let port = 20_000 + (x % 12_000) as u16;
        let free = match std::net::TcpListener::bind((ip, port)) {
            Ok(_) => true,
            // An address of another network namespace: it cannot be checked from here.
            Err(e) => e.kind() == std::io::ErrorKind::AddrNotAvailable,
        };
        // Never the same port twice in one test process: a port handed out is free
        // until its user binds it, and tests run in parallel threads.
        if free
            && HANDED_OUT
                .lock()
                .map(|mut h| h.insert((ip.to_string(), port)))
                .unwrap_or(true)
        {
            return port;
        }
    }
    panic!("no free port below the ephemeral range on {ip}");
}

/// A raw Kafka protocol connection, for exact requests and bad input.
pub struct RawClient {
    stream: TcpStream,
    correlation_id: i32,
}

impl RawClient {
    pub fn connect(addr: &str) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        RawClient {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends a request and decodes the response of type `R`.
    pub fn call<Q: Encodable, R: Decodable + HeaderVersion>(&mut self, key: ApiKey, version: i16, request: &Q) -> R {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("compat-tests")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, key.request_header_version(version))
            .expect("encode header");
        request.encode(&mut body, version).expect("encode request");
        self.send_frame(&body);
        let mut frame = self.read_frame().expect("response frame");
        let response_header = ResponseHeader::decode(&mut frame, R::header_version(version)).expect("response header");
        assert_eq!(response_header.correlation_id, self.correlation_id);
        R::decode(&mut frame, version).expect("decode response")
    }

    pub fn send_frame(&mut self, body: &[u8]) {
        let mut framed = BytesMut::with_capacity(body.len() + 4);
        framed.put_i32(body.len() as i32);
        framed.put_slice(body);
        self.stream.write_all(&framed).expect("write");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one response frame; None when the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).ok()?;
        let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut frame).ok()?;
        Some(Bytes::from(frame))
    }

    /// True once the broker has closed this connection (read returns EOF or reset).
    pub fn is_closed_by_broker(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.stream.read(&mut buf), Ok(0) | Err(_))
    }
}

/// Builds an uncompressed magic-v2 record batch, as a producer would, with `values` as
/// records (null keys) and `timestamp` as every record's time.
pub fn record_batch(values: &[&[u8]], timestamp: i64) -> Bytes {
    let mut records = BytesMut::new();
    for (i, v) in values.iter().enumerate() {
        let mut r = BytesMut::new();
        r.put_i8(0);
        put_varint(&mut r, 0);
        put_varint(&mut r, i as i64);
        put_varint(&mut r, -1);
        put_varint(&mut r, v.len() as i64);
        r.put_slice(v);
        put_varint(&mut r, 0);
        put_varint(&mut records, r.len() as i64);
        records.put_slice(&r);
    }
    let n = values.len() as i32;
    let mut b = BytesMut::new();
    b.put_i64(0);
    b.put_i32(49 + records.len() as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(0);
    b.put_i32(n - 1);
    b.put_i64(timestamp);
    b.put_i64(timestamp);
    b.put_i64(-1);
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(n);
    b.put_slice(&records);
    let crc = crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

fn put_varint(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

/// CRC-32C (Castagnoli), bitwise: tests build few batches, so speed does not matter and
/// the harness stays free of the broker's own dependencies.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Splits fetched bytes into (base offset, record count) per batch.
pub fn batch_offsets(mut bytes: Bytes) -> Vec<(i64, i32)> {
    let mut out = Vec::new();
    while bytes.len() >= 61 {
        let base = (&bytes[0..8]).get_i64();
        let len = (&bytes[8..12]).get_i32() as usize + 12;
        let count = (&bytes[57..61]).get_i32();
        out.push((base, count));
        if len > bytes.len() {
            break;
        }
        bytes.advance(len);
    }
    out
}

/// A plain HTTP/1.0 GET; returns the status code and the body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Percent-encodes a query-string value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Creates a topic of `partitions` partitions (one replica) through the rdkafka admin
/// client, and panics unless the broker says it was created.
pub async fn create_topic(broker: &Broker, name: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topics");
    assert!(results[0].is_ok(), "{results:?}");
}
