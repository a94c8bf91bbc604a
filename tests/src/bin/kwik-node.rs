//! One host of the real-network scenarios: a primary, a secondary or a client.
//!
//! ```text
//! kwik-node primary   --listen ADDR --dir DIR --secondary ADDR...
//! kwik-node secondary --listen ADDR --dir DIR
//! kwik-node client    --server ADDR --dir DIR --get BYTES [--paths N]
//! ```
//!
//! Servers share the certificate, key and group key files in `DIR` (the primary writes
//! them). The client prints `ready` once its paths are active, `half` when half of the
//! body was read, and at the end one line `done bytes=.. secs=.. sha256_ok=..` followed by
//! one `path ..` line per path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kwik_core::{
    CertificateDer, ClientConfig, Config, GroupKey, PrivateKeyDer, PrivatePkcs8KeyDer, ServerConfig,
};
use kwik_tokio::{Endpoint, PathEvent, Role, Session, VarInt};
use sha2::{Digest, Sha256};

fn config() -> Config {
    let mut c = Config::default();
    c.stream_receive_window = 32 << 20;
    c.receive_window = 64 << 20;
    c
}

/// The body: byte `i` is a fixed function of `i`, so any server serves any range.
fn body_byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn body_range(offset: u64, len: u64) -> Bytes {
    Bytes::from((offset..offset + len).map(body_byte).collect::<Vec<u8>>())
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn args_all(args: &[String], name: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].clone())
        .collect()
}

fn server_config(dir: &Path, create: bool) -> ServerConfig {
    let (cert, key, group) = if create {
        let certified = rcgen::generate_simple_self_signed(vec!["kwik.test".to_owned()]).unwrap();
        let cert = certified.cert.der().to_vec();
        let key = certified.signing_key.serialize_der();
        let group: [u8; 32] = Sha256::digest(&key).into();
        std::fs::write(dir.join("cert.der"), &cert).unwrap();
        std::fs::write(dir.join("key.der"), &key).unwrap();
        std::fs::write(dir.join("group.key"), group).unwrap();
        (cert, key, group)
    } else {
        let group: [u8; 32] = std::fs::read(dir.join("group.key"))
            .unwrap()
            .try_into()
            .unwrap();
        (
            std::fs::read(dir.join("cert.der")).unwrap(),
            std::fs::read(dir.join("key.der")).unwrap(),
            group,
        )
    };
    let mut config = ServerConfig::with_single_cert(
        vec![CertificateDer::from(cert)],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        config(),
    )
    .unwrap();
    config.group_key(GroupKey::new(group));
    config
}

async fn serve_session(session: Session) {
    let s = session.clone();
    tokio::spawn(async move {
        while let Ok((d, mut writer)) = s.accept_delegation().await {
            tokio::spawn(async move {
                let mut pos = d.body_offset;
                let end = d.body_offset + d.len;
                while pos < end {
                    let n = (end - pos).min(256 * 1024);
                    if writer.write_chunk(body_range(pos, n)).await.is_err() {
                        return;
                    }
                    pos += n;
                }
            });
        }
    });
    if session.role() != Role::Primary {
        return;
    }
    while let Ok((mut send, mut recv)) = session.accept_bi().await {
        let request = recv.read_to_end(64).await.unwrap_or_default();
        let Some(len) = String::from_utf8_lossy(&request)
            .strip_prefix("body ")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        send.stripe(Bytes::from_static(b"body"), len).unwrap();
        send.finish().unwrap();
    }
}

async fn run_server(listen: SocketAddr, dir: &Path, primary: bool, secondaries: Vec<SocketAddr>) {
    let server = kwik_tokio::listen(listen, server_config(dir, primary)).unwrap();
    if primary {
        std::fs::write(dir.join("ready"), b"").unwrap();
    }
    while let Some(incoming) = server.accept().await {
        let Ok(session) = incoming.await else {
            continue;
        };
        if session.role() == Role::Primary {
            for a in &secondaries {
                if let Err(e) = session.add_path(*a, "kwik.test") {
                    eprintln!("add_path {a}: {e}");
                }
            }
        }
        tokio::spawn(serve_session(session));
    }
}

async fn run_client(server: SocketAddr, dir: &Path, len: u64, paths: usize) {
    let cert = CertificateDer::from(std::fs::read(dir.join("cert.der")).unwrap());
    let config = ClientConfig::with_root_certificates([cert], config()).unwrap();
    let client = Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).unwrap();
    let session = client
        .connect_with(config, server, "kwik.test")
        .unwrap()
        .await
        .expect("session");
    let mut active = 0;
    while active < paths {
        match tokio::time::timeout(Duration::from_secs(10), session.path_event()).await {
            Ok(Ok(PathEvent::Active(_))) => active += 1,
            Ok(Ok(_)) => {}
            _ => panic!("paths did not become active"),
        }
    }
    println!("ready");
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send.write_all(format!("body {len}").as_bytes())
        .await
        .unwrap();
    send.finish().unwrap();
    let started = Instant::now();
    let mut hasher = Sha256::new();
    let mut want = Sha256::new();
    let mut read = 0u64;
    let mut half = false;
    while let Some(chunk) = recv.read_chunk(usize::MAX).await.unwrap() {
        hasher.update(&chunk);
        want.update(body_range(read, chunk.len() as u64));
        read += chunk.len() as u64;
        if !half && read >= len / 2 {
            half = true;
            println!("half");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let ok = hasher.finalize() == want.finalize() && read == len;
    println!("done bytes={read} secs={secs:.3} sha256_ok={ok}");
    for p in session.paths() {
        println!(
            "path {} {} {:?} rtt={:?} received={}",
            p.id.0,
            p.address,
            p.state,
            p.rtt.unwrap_or_default(),
            p.bytes_received
        );
    }
    session.close(VarInt::from_u32(0), b"done");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(arg(&args, "--dir").expect("--dir"));
    match args.get(1).map(String::as_str) {
        Some("primary") | Some("secondary") => {
            let listen = arg(&args, "--listen").expect("--listen").parse().unwrap();
            let secondaries = args_all(&args, "--secondary")
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
            run_server(listen, &dir, args[1] == "primary", secondaries).await;
        }
        Some("client") => {
            let server = arg(&args, "--server").expect("--server").parse().unwrap();
            let len = arg(&args, "--get").expect("--get").parse().unwrap();
            let paths = arg(&args, "--paths").map_or(0, |p| p.parse().unwrap());
            run_client(server, &dir, len, paths).await;
        }
        _ => eprintln!("usage: kwik-node primary|secondary|client ..."),
    }
}
