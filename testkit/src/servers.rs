//! Private Redis and PostgreSQL servers for tests that kill, stop or restart them: each runs
//! on a free port, with its data in a directory of its own, and is stopped when dropped.
//! The shared servers are never touched this way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free TCP port on the loopback interface for a server to listen on, picked at random
/// below the range the kernel hands out for outgoing connections (32768 and up): a port
/// the kernel picked (`bind :0`) can be taken by any test's client connection before the
/// server binds it.
pub fn free_port() -> u16 {
    free_port_with(20_000, &[])
}

/// A free port for a Redis Cluster node, whose cluster bus listens on the port + 10000:
/// both are free and below the kernel's range for outgoing connections.
pub fn free_cluster_port() -> u16 {
    free_port_with(10_000, &[10_000])
}

/// A port from `from` to `from` + 12000 that is free, and so is each port `offsets` above it.
fn free_port_with(from: u16, offsets: &[u16]) -> u16 {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    for _ in 0..1000 {
        let port = from + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if free(port) && offsets.iter().all(|offset| free(port + offset)) {
            return port;
        }
    }
    panic!("no free port from {from}")
}

/// How a private Redis keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk.
    None,
    /// An append-only file synced after every write.
    AofAlways,
    /// An append-only file synced once a second (Redis's default for AOF).
    AofEverySec,
}

/// A `redis-server` of the test's own.
#[derive(Debug)]
pub struct PrivateRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
    persistence: Persistence,
}

impl PrivateRedis {
    /// Starts a server keeping its files in `dir`, and waits until it answers.
    pub fn start(dir: &Path, persistence: Persistence) -> Self {
        Self::start_on(dir, free_port(), persistence)
    }

    /// Starts a server on `port` (e.g. one a process under test already tries).
    pub fn start_on(dir: &Path, port: u16, persistence: Persistence) -> Self {
        let (aof, fsync) = match persistence {
            Persistence::None => ("no", "everysec"),
            Persistence::AofAlways => ("yes", "always"),
            Persistence::AofEverySec => ("yes", "everysec"),
        };
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", aof, "--appendfsync", fsync])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let server = Self {
            child,
            port,
            dir: dir.to_owned(),
            persistence,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        wait_answering(&self.url());
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `kill -9`, then waits for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server (`kill -9`) and starts it again on the same port and files.
    pub fn restart(&mut self) {
        self.kill();
        *self = Self::start_on(&self.dir.clone(), self.port, self.persistence);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the Redis at `url` answers `PING`.
fn wait_answering(url: &str) {
    for _ in 0..400 {
        if redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("private redis-server at {url} did not start");
}

/// A Redis Cluster of the test's own: `masters` nodes (one, or three or more) on free ports,
/// the slots spread over them by `redis-cli --cluster create` (or all on the one), no replicas, nothing on disk but
/// the nodes' cluster files. Stopped when dropped.
#[derive(Debug)]
pub struct PrivateCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl PrivateCluster {
    /// Starts the nodes, joins them into one cluster and waits until it serves every slot.
    pub fn start(masters: usize) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut cluster = Self {
            nodes: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        for _ in 0..masters {
            let port = free_cluster_port();
            let node = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                ])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .arg("--dir")
                .arg(cluster.dir.path())
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            cluster.nodes.push(node);
            cluster.ports.push(port);
            wait_answering(&format!("redis://127.0.0.1:{port}"));
        }
        let created = match cluster.ports.as_slice() {
            // `--cluster create` wants three masters; one takes every slot itself.
            [port] => Command::new("redis-cli")
                .args([
                    "-p",
                    &port.to_string(),
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    "0",
                    "16383",
                ])
                .stdout(Stdio::null())
                .status(),
            ports => Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .stdout(Stdio::null())
                .status(),
        };
        assert!(
            created.is_ok_and(|s| s.success()),
            "redis-cli --cluster create"
        );
        for port in &cluster.ports {
            cluster.wait_serving(*port);
        }
        cluster
    }

    /// Waits until the node on `port` says the cluster serves every slot.
    fn wait_serving(&self, port: u16) {
        let url = format!("redis://127.0.0.1:{port}");
        for _ in 0..400 {
            let info = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c));
            if info.is_ok_and(|info| info.contains("cluster_state:ok")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the cluster's node on {port} never served every slot");
    }

    /// The URL of one of its nodes (any node is a way in).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }

    /// Runs `redis-cli -c` (following redirects) with `args` on one of its nodes; its
    /// output. Fails the test when redis-cli does.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-c", "-p", &self.ports[0].to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && !stdout.starts_with("ERR"),
            "redis-cli {args:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// The cluster slot of `key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        self.cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot number")
    }

    /// The masters, as `CLUSTER NODES` lists them.
    pub fn masters(&self) -> Vec<Master> {
        self.cli(&["CLUSTER", "NODES"])
            .lines()
            .filter(|line| line.contains("master"))
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let port = fields[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|p| p.parse().ok())
                    .expect("a node address");
                let slots = fields[8..]
                    .iter()
                    .filter(|range| !range.starts_with('['))
                    .map(|range| {
                        let (from, to) = range.split_once('-').unwrap_or((range, range));
                        (from.parse().unwrap(), to.parse().unwrap())
                    })
                    .collect();
                Master {
                    id: fields[0].to_owned(),
                    port,
                    slots,
                }
            })
            .collect()
    }

    /// The master serving `slot`.
    pub fn owner(&self, slot: u16) -> Master {
        self.masters()
            .into_iter()
            .find(|m| {
                m.slots
                    .iter()
                    .any(|(from, to)| (*from..=*to).contains(&slot))
            })
            .expect("every slot is served")
    }

    /// The `redis-cli --cluster reshard` that moves the first `count` slots of `from` to
    /// `to`, keys and all, while clients go on; for the caller to run. Waits first until
    /// every node agrees on the layout (redis-cli refuses to start before).
    pub fn reshard(&self, from: &Master, to: &Master, count: u16) -> Command {
        let node = format!("127.0.0.1:{}", self.ports[0]);
        for _ in 0..200 {
            let checked = Command::new("redis-cli")
                .args(["--cluster", "check", &node])
                .stdout(Stdio::null())
                .status();
            if checked.is_ok_and(|s| s.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut reshard = Command::new("redis-cli");
        reshard
            .args(["--cluster", "reshard", &node])
            .args(["--cluster-from", &from.id, "--cluster-to", &to.id])
            .args(["--cluster-slots", &count.to_string(), "--cluster-yes"])
            .stdout(Stdio::null());
        reshard
    }
}

/// One master of a [`PrivateCluster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub id: String,
    pub port: u16,
    /// The slot ranges it serves, inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// A PostgreSQL cluster of the test's own, trusting local connections.
#[derive(Debug)]
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// Creates the cluster and starts it.
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries are installed")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .max()
            .expect("a PostgreSQL version");
        let dir = tempfile::tempdir().expect("a temporary directory");
        if nix::unistd::geteuid().is_root() {
            let owned = Command::new("chown")
                .arg("-R")
                .arg("postgres")
                .arg(dir.path())
                .status();
            assert!(owned.is_ok_and(|s| s.success()), "chown to postgres");
        }
        let pg = Self {
            bin,
            dir,
            port: free_port(),
        };
        pg.run(
            "initdb",
            &["-D", &pg.data(), "-A", "trust", "-U", "postgres"],
        );
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn tool(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if nix::unistd::geteuid().is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let status = self
            .tool(tool)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "{tool} {args:?} failed");
    }

    /// Starts the server (again).
    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-o", &options, "start"],
        );
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn down(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// A URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
