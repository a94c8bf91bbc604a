//! Real network: a primary and two secondaries, each on its own host behind a tbf
//! bottleneck of 50, 30 and 20 Mbit/s (`netlab up 50mbit 30mbit 20mbit`), stripe 64 MiB to
//! a client host; then the same with one secondary's link cut halfway. The checksums must
//! match; the goodput against the sum of the bottlenecks is printed (a wall-clock figure,
//! so it is reported, not asserted).
//!
//! Needs root and network namespaces; where the machine cannot create them, or the netlab
//! script is missing, the test says so and passes without running.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BODY: u64 = 64 << 20;
const RATES: [&str; 3] = ["50mbit", "30mbit", "20mbit"];
const CAPACITY_MBIT: f64 = 100.0;

fn netlab() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("KWIK_NETLAB").map(PathBuf::from),
        Some(manifest.join("../../shared/netlab/netlab")),
        Some(PathBuf::from("/work/shared/netlab/netlab")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

fn can_create_namespaces() -> bool {
    let probe = "kwikprobe";
    let ok = Command::new("ip")
        .args(["netns", "add", probe])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let _ = Command::new("ip").args(["netns", "del", probe]).status();
    }
    ok
}

/// Takes the lab down when dropped, whatever happened.
struct Lab {
    script: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    fn up(script: PathBuf, one_server: bool) -> Self {
        // A lab left behind by an interrupted run can make the first attempt fail.
        let ok = (0..2).any(|attempt| {
            if attempt > 0 {
                let _ = Command::new(&script).arg("down").status();
                std::thread::sleep(Duration::from_millis(500));
            }
            Command::new(&script)
                .arg("up")
                .args(one_server.then_some("--one-server"))
                .args(RATES)
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(ok, "netlab up failed");
        Self {
            script,
            children: Vec::new(),
        }
    }

    fn command(&self, host: &[&str], program: &str, args: &[String]) -> Command {
        let mut c = Command::new(&self.script);
        c.args(host).arg(program).args(args);
        c
    }

    fn cut(&self, link: usize) {
        let status = Command::new(&self.script)
            .args(["cut", &link.to_string()])
            .status()
            .expect("netlab cut");
        assert!(status.success());
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(&self.script)
            .arg("down")
            .stdout(Stdio::null())
            .status();
    }
}

struct Run {
    secs: f64,
    bytes: u64,
    sha_ok: bool,
    paths: Vec<String>,
}

/// How the servers are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// A primary and two secondaries, each on its own host; the body is striped.
    ThreeHosts,
    /// One server host with three addresses (`netlab up --one-server`); the body is
    /// written on the stream and spread over the three paths (same-peer multipath).
    OneServer,
}

/// Serialises the scenarios: the lab is one per machine.
static LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(script: PathBuf, layout: Layout, cut: Option<usize>) -> Run {
    let node = env!("CARGO_BIN_EXE_kwik-node");
    let mut lab = Lab::up(script, layout == Layout::OneServer);
    let dir = std::env::temp_dir().join(format!("kwik-netlab-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display().to_string();
    let addr = |i: usize| format!("10.77.{}.2:4433", 100 + i);
    let mut primary_args: Vec<String> = vec![
        "primary".into(),
        "--listen".into(),
        match layout {
            Layout::ThreeHosts => addr(1),
            // The one server answers on all three addresses.
            Layout::OneServer => "0.0.0.0:4433".into(),
        },
        "--dir".into(),
        d.clone(),
    ];
    let flag = match layout {
        Layout::ThreeHosts => "--secondary",
        Layout::OneServer => "--same-peer",
    };
    for i in [2, 3] {
        primary_args.push(flag.into());
        primary_args.push(addr(i));
    }
    let primary = lab
        .command(&["server", "1"], node, &primary_args)
        .spawn()
        .unwrap();
    lab.children.push(primary);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("ready").exists() {
        assert!(Instant::now() < deadline, "the primary did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    if layout == Layout::ThreeHosts {
        for i in [2, 3] {
            let secondary = lab
                .command(
                    &["server", &i.to_string()],
                    node,
                    &[
                        "secondary".into(),
                        "--listen".into(),
                        addr(i),
                        "--dir".into(),
                        d.clone(),
                    ],
                )
                .spawn()
                .unwrap();
            lab.children.push(secondary);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let client = lab
        .command(
            &["client"],
            node,
            &[
                "client".into(),
                "--server".into(),
                addr(1),
                "--dir".into(),
                d.clone(),
                "--get".into(),
                BODY.to_string(),
                "--paths".into(),
                "2".into(),
                if layout == Layout::OneServer {
                    "--stream".into()
                } else {
                    "--striped".into()
                },
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let result = collect(&mut lab, client, cut);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Reads a client's report, cutting `cut` when it says half the body arrived. A watchdog
/// takes the lab down (killing every process) if the run hangs.
fn collect(lab: &mut Lab, mut client: Child, cut: Option<usize>) -> Run {
    let stdout = client.stdout.take().unwrap();
    lab.children.push(client);
    let script = lab.script.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = Command::new(script).arg("down").status();
        }
    });
    let mut result = Run {
        secs: 0.0,
        bytes: 0,
        sha_ok: false,
        paths: Vec::new(),
    };
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line == "half" {
            if let Some(link) = cut {
                lab.cut(link);
            }
        } else if let Some(rest) = line.strip_prefix("done ") {
            for kv in rest.split_whitespace() {
                match kv.split_once('=') {
                    Some(("bytes", v)) => result.bytes = v.parse().unwrap_or(0),
                    Some(("secs", v)) => result.secs = v.parse().unwrap_or(0.0),
                    Some(("sha256_ok", v)) => result.sha_ok = v == "true",
                    _ => {}
                }
            }
        } else if line.starts_with("path ") {
            result.paths.push(line);
        }
    }
    let _ = done_tx.send(());
    result
}

/// The same body over Linux MPTCP (cubic, chosen per socket) on the one-server lab: the server announces
/// its other two addresses, the client opens a subflow to each. `None` if the kernel
/// cannot be set up for it.
fn run_mptcp(script: PathBuf) -> Option<Run> {
    let node = env!("CARGO_BIN_EXE_kwik-node");
    let mut lab = Lab::up(script, true);
    let dir = std::env::temp_dir().join(format!("kwik-netlab-mptcp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The server announces its other addresses; the client opens one subflow from each of
    // its other interfaces (fullmesh), so that each subflow follows its own link.
    let setup: [&[&str]; 6] = [
        &[
            "client",
            "ip",
            "mptcp",
            "limits",
            "set",
            "subflows",
            "8",
            "add_addr_accepted",
            "8",
        ],
        &[
            "server",
            "1",
            "ip",
            "mptcp",
            "limits",
            "set",
            "subflows",
            "8",
            "add_addr_accepted",
            "8",
        ],
        &[
            "server",
            "1",
            "ip",
            "mptcp",
            "endpoint",
            "add",
            "10.77.102.2",
            "dev",
            "s2",
            "signal",
        ],
        &[
            "server",
            "1",
            "ip",
            "mptcp",
            "endpoint",
            "add",
            "10.77.103.2",
            "dev",
            "s3",
            "signal",
        ],
        &[
            "client",
            "ip",
            "mptcp",
            "endpoint",
            "add",
            "10.77.2.1",
            "dev",
            "c2",
            "subflow",
            "fullmesh",
        ],
        &[
            "client",
            "ip",
            "mptcp",
            "endpoint",
            "add",
            "10.77.3.1",
            "dev",
            "c3",
            "subflow",
            "fullmesh",
        ],
    ];
    for args in setup {
        let ok = Command::new(&lab.script)
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("MPTCP comparison skipped: `{}` failed", args.join(" "));
            return None;
        }
    }
    let d = dir.display().to_string();
    let server = lab
        .command(
            &["server", "1"],
            node,
            &[
                "mptcp-server".into(),
                "--listen".into(),
                // Subflows join on the other addresses too.
                "0.0.0.0:5201".into(),
                "--dir".into(),
                d.clone(),
            ],
        )
        .spawn()
        .unwrap();
    lab.children.push(server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("ready").exists() {
        if Instant::now() > deadline {
            println!("MPTCP comparison skipped: the server did not start");
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let client = lab
        .command(
            &["client"],
            node,
            &[
                "mptcp-client".into(),
                "--server".into(),
                "10.77.101.2:5201".into(),
                "--dir".into(),
                d,
                "--get".into(),
                BODY.to_string(),
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let result = collect(&mut lab, client, None);
    let _ = std::fs::remove_dir_all(&dir);
    Some(result)
}

fn lab_script() -> Option<PathBuf> {
    let Some(script) = netlab() else {
        println!("skipping: the netlab script was not found (set KWIK_NETLAB)");
        return None;
    };
    if !can_create_namespaces() {
        println!("skipping: this machine cannot create network namespaces (needs root)");
        return None;
    }
    Some(script)
}

fn report(what: &str, r: &Run) {
    let goodput = r.bytes as f64 * 8.0 / r.secs.max(1e-9) / 1e6;
    println!(
        "{what}: {} bytes in {:.2} s = {goodput:.1} Mbit/s, {:.3} of the {CAPACITY_MBIT} Mbit/s of bottlenecks; sha256 ok {}",
        r.bytes,
        r.secs,
        goodput / CAPACITY_MBIT,
        r.sha_ok
    );
    for p in &r.paths {
        println!("  {p}");
    }
}

#[test]
fn three_hosts_stripe_over_real_bottlenecks() {
    let Some(script) = lab_script() else { return };
    let _lab = LAB.lock().unwrap_or_else(|e| e.into_inner());
    for cut in [None, Some(2)] {
        let r = run(script.clone(), Layout::ThreeHosts, cut);
        let what = format!(
            "netlab {RATES:?}, three hosts{}",
            if cut.is_some() {
                ", link 2 cut at 50 %"
            } else {
                ""
            }
        );
        report(&what, &r);
        assert_eq!(r.bytes, BODY, "every byte arrived");
        assert!(r.sha_ok, "the checksum matches");
    }
}

#[test]
fn one_server_three_addresses() {
    let Some(script) = lab_script() else { return };
    let _lab = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let r = run(script.clone(), Layout::OneServer, None);
    report(
        &format!("netlab --one-server {RATES:?}, same-peer multipath"),
        &r,
    );
    assert_eq!(r.bytes, BODY, "every byte arrived");
    assert!(r.sha_ok, "the checksum matches");
    if let Some(m) = run_mptcp(script) {
        report(
            &format!("netlab --one-server {RATES:?}, Linux MPTCP (cubic)"),
            &m,
        );
        let rate = |r: &Run| r.bytes as f64 / r.secs.max(1e-9);
        println!("KWIK same-peer / MPTCP goodput: {:.3}", rate(&r) / rate(&m));
    }
}
