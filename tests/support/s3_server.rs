//! A real S3-compatible server (`s3s-fs`) on 127.0.0.1 for the tests and benchmarks that need
//! one: started once per process on a free port over a temporary directory with one bucket,
//! killed (and its directory removed) when the process exits, however it exits. The binary
//! comes from `KS_S3S_FS`, then `$HOME/.cache/keyed-state/tools/bin/s3s-fs` (where
//! `scripts/setup` installs it), then `PATH`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keyed_state::checkpoint::ObjectStorageOptions;

pub const ACCESS: &str = "keyed-state-test";
pub const SECRET: &str = "keyed-state-secret";
pub const BUCKET: &str = "checkpoints";

/// The S3 server of this test process: started once, stopped when the process exits.
///
/// It lives in a static, and statics are never dropped, so no destructor can stop it (one
/// did not: every test process left an `s3s-fs` running and its directory behind). A small
/// shell runs it instead and waits for end-of-file on a pipe whose only writer is this
/// process (`_lifeline`): the kernel closes that at the process's exit, whether it returned,
/// panicked or was killed, and the shell then kills the server and removes its directory.
pub struct Server {
    pub port: u16,
    pid: u32,
    dir: PathBuf,
    _lifeline: ChildStdin,
    /// The watching shell; it outlives this process, whose exit is what it waits for.
    _watcher: Child,
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The directory it serves (removed when it stops).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

/// Runs `$@` (the server) in the background, prints its pid, waits for end-of-file on stdin,
/// then kills it and removes `$1`. Nothing is written to stdout after the pid: its reader is
/// gone by then, and a write would kill the shell (`SIGPIPE`) before it kills the server.
const WATCH: &str = r#"dir=$1; shift
"$@" >/dev/null 2>&1 &
pid=$!
echo "$pid"
exec >/dev/null
cat
kill -KILL "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir""#;

/// The server's binary, found before anything is started: a test without it fails at once,
/// saying where it looked, instead of waiting for a port nothing will open.
fn server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("KS_S3S_FS") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = PathBuf::from(home).join(".cache/keyed-state/tools/bin/s3s-fs");
    std::iter::once(cached.clone())
        .chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|dir| dir.join("s3s-fs")),
        )
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no s3s-fs binary: not in KS_S3S_FS, {}, or PATH; scripts/setup installs it",
                cached.display()
            )
        })
}

/// Whether process `pid` has exited (a zombie until its parent reaps it). Where there is no
/// `/proc` to ask, it is taken to be running.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => std::path::Path::new("/proc/self").exists(),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the server `pid` listens on `port` within 20 s; `false` at once if it exits.
fn listens(pid: u32, port: u16) -> bool {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(20) || exited(pid) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        // Before the directory: a missing binary must not leave one behind.
        let binary = server_binary();
        // Removed by the watching shell, not by `TempDir`'s destructor.
        let dir = tempfile::tempdir().unwrap().keep();
        // s3s-fs serves each directory under its root as a bucket.
        std::fs::create_dir(dir.join(BUCKET)).unwrap();
        let port = free_port();
        let mut watcher = Command::new("sh")
            .args(["-c", WATCH, "keyed-state-s3-watch"])
            .arg(&dir)
            .arg(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS, "--secret-key", SECRET])
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs the S3 server");
        let lifeline = watcher.stdin.take().expect("piped stdin");
        let mut line = String::new();
        BufReader::new(watcher.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .unwrap();
        let pid = line
            .trim()
            .parse()
            .expect("the watching shell prints the server's pid");
        // From here a panic drops `server`, closing the lifeline, which stops it.
        let server = Server {
            port,
            pid,
            dir,
            _lifeline: lifeline,
            _watcher: watcher,
        };
        assert!(
            listens(pid, port),
            "the S3 server {} did not listen on {port} (it exited, or 20 s passed)",
            binary.display()
        );
        server
    })
}

pub fn options(port: u16) -> ObjectStorageOptions {
    let mut o = ObjectStorageOptions::default();
    o.timeout = Duration::from_secs(5);
    o.retries = 2;
    o.retry_timeout = Duration::from_secs(10);
    o.with("aws_endpoint", format!("http://127.0.0.1:{port}"))
        .with("aws_allow_http", "true")
        .with("aws_region", "us-east-1")
        .with("aws_access_key_id", ACCESS)
        .with("aws_secret_access_key", SECRET)
        .with("aws_virtual_hosted_style_request", "false")
}
