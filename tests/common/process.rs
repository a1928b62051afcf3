//! The `lb` binary as a separate process: a config file written for it, its log collected (and echoed
//! for failing tests), its address read from the log, signals, and its peak memory.

use super::WAIT;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

pub fn lb_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lb"))
}

pub fn temp_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lb-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `lb` process, killed on drop. Its log is collected for assertions.
pub struct LbProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// The HTTPS listener, when the configuration has `[tls]`.
    pub tls: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
    pub config: PathBuf,
}

impl LbProcess {
    pub fn start(config: &str) -> LbProcess {
        LbProcess::start_limited(config, None)
    }

    /// Starts `lb`, optionally under a descriptor limit (set by `sh -c 'ulimit -n N; exec lb'`).
    pub fn start_limited(config: &str, max_fds: Option<u32>) -> LbProcess {
        let path = temp_config(&format!("run-{}.toml", rand_suffix()), config);
        let mut command = match max_fds {
            None => {
                let mut c = lb_command();
                c.arg(&path);
                c
            }
            Some(limit) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$1\"",));
                c.arg(env!("CARGO_BIN_EXE_lb")).arg(&path);
                c
            }
        };
        let mut child = command
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut admin = None;
        let mut addr = None;
        let want_admin = config.contains("[admin]");
        let want_tls = config.contains("[tls]");
        let mut tls = None;
        while addr.is_none() || (want_admin && admin.is_none()) || (want_tls && tls.is_none()) {
            let line = lines.next().expect("lb exited before listening").unwrap();
            if let Some(rest) = line.split("listening on ").nth(1) {
                addr = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
            }
            if let Some(rest) = line.split("HTTPS on ").nth(1) {
                tls = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
            }
            if let Some(rest) = line.split("dashboard on http://").nth(1) {
                admin = Some(rest.trim_end_matches('/').parse().unwrap());
            }
            log.lock().unwrap().push(line);
        }
        let addr = addr.unwrap();
        // Keep draining the log so the process never blocks on a full pipe; echo it for failures.
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("lb: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        LbProcess {
            child,
            addr,
            tls,
            admin,
            log,
            config: path,
        }
    }

    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    pub fn signal(&self, signal: i32) {
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({signal})");
    }

    /// Everything the process has logged so far, for failure messages.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Waits for the process to exit (bounded) and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(std::time::Instant::now() < deadline, "lb did not exit");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for LbProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
