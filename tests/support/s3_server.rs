//! A real S3-compatible server (`s3s-fs`) on 127.0.0.1 for the tests and benchmarks that need
//! one: started once per process on a free port over a temporary directory with one bucket,
//! killed when the process ends. The binary comes from `KS_S3S_FS`, then
//! `$HOME/.cache/keyed-state/tools/bin/s3s-fs` (where `scripts/setup` installs it), then `PATH`.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keyed_state::checkpoint::ObjectStorageOptions;

pub const ACCESS: &str = "keyed-state-test";
pub const SECRET: &str = "keyed-state-secret";
pub const BUCKET: &str = "checkpoints";

/// The S3 server of this test process: started once, killed when the process exits.
pub struct Server {
    pub port: u16,
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

struct ChildGuard(Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("KS_S3S_FS") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = PathBuf::from(home).join(".cache/keyed-state/tools/bin/s3s-fs");
    if cached.exists() {
        return cached;
    }
    PathBuf::from("s3s-fs")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the S3 server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        // s3s-fs serves each directory under its root as a bucket.
        std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
        let port = free_port();
        let child = Command::new(server_binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS, "--secret-key", SECRET])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the S3 server {:?} ({e}); scripts/setup installs it",
                    server_binary()
                )
            });
        let guard = ChildGuard(child);
        wait_for(port);
        Server {
            port,
            _child: guard,
            _dir: dir,
        }
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
