//! A real etcd (Debian's `etcd-server`) for fleet tests: on two free loopback ports with its
//! data in a temporary directory, killed and reaped on drop, restartable with or without its
//! data.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    data_dir: PathBuf,
    generation: u32,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data-0");
        let mut etcd = Self {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            dir,
            data_dir,
            generation: 0,
        };
        etcd.spawn();
        etcd
    }

    /// Its client URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts it again on the same ports with an empty data dir: every lease
    /// and key is lost, and revisions start over.
    pub fn restart_with_fresh_data(&mut self) {
        self.kill();
        self.generation += 1;
        self.data_dir = self.dir.path().join(format!("data-{}", self.generation));
        self.spawn();
    }

    /// Kills it and starts it again on the same ports with the same data.
    pub fn restart_with_same_data(&mut self) {
        self.kill();
        self.generation += 1;
        self.spawn();
    }

    fn spawn(&mut self) {
        let log_path = self
            .dir
            .path()
            .join(format!("etcd-{}.log", self.generation));
        let log = std::fs::File::create(&log_path).expect("etcd log file");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(etcd_binary())
            .args(["--name", "default", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        self.wait_until_healthy(&log_path);
    }

    /// Polls etcd's `/health` until it reports healthy; panics with its log if it does not
    /// within 15 s.
    fn wait_until_healthy(&mut self, log_path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("etcd exited with {status}:\n{}", read_log(log_path));
            }
            if self.healthy() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not answer within 15 s:\n{}", read_log(log_path));
    }

    fn healthy(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn etcd_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .expect("`etcd` is not on PATH: install it with `apt-get install etcd-server`")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"))
}
