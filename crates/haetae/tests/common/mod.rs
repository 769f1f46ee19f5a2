//! `haetae serve` as a user runs it, for the binary's tests: started on a free port, ready once it
//! prints its address, stopped with SIGTERM.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Starting nats-server and the node (replaying an empty or tiny log).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Serve {
    child: Child,
    pub address: String,
}

impl Serve {
    /// Starts `haetae serve` on a free port with `data_dir`; returns once it prints its address.
    pub fn start(data_dir: &Path, output: std::path::PathBuf) -> Serve {
        Serve::start_with(data_dir, output, &[])
    }

    /// Like [`Serve::start`], with more arguments for `serve` (a `--config`, say).
    pub fn start_with(data_dir: &Path, output: std::path::PathBuf, extra: &[&str]) -> Serve {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&output).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_haetae"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env_remove("HAETAE_NATS_URL")
            .env_remove("HAETAE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("haetae serve starts");
        let stdout = child.stdout.take().unwrap();
        let (lines, printed) = mpsc::channel();
        let copy = output.clone();
        std::thread::spawn(move || {
            let mut log = std::fs::OpenOptions::new().append(true).open(copy).unwrap();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                let _ = lines.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match printed.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("haetae is serving the Matrix API at http://") {
                        return Serve { child, address: rest.trim().to_string() };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("haetae serve did not start within {START_TIMEOUT:?}:\n{}", std::fs::read_to_string(&output).unwrap());
                }
            }
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on the child this test started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "haetae serve did not stop within {STOP_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn versions_status(&self) -> String {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(stream, "GET /_matrix/client/versions HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.address).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.lines().next().unwrap_or_default().to_string()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

