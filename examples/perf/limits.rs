//! The machine's limits (plain UDP, AEAD on one core) and the process's CPU time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pairs::LOOPBACK;

/// Plain UDP on loopback with GSO and GRO (quinn-udp), no crypto: 1,200-byte datagrams
/// sent in batches of 10 for about `secs`, the sender on `sender_core` if given (the
/// receiver runs on the calling thread). Returns the Gbit/s received.
pub(crate) fn limit_udp(
    secs: f64,
    sender_core: Option<core_affinity::CoreId>,
) -> anyhow::Result<f64> {
    use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
    use std::io::IoSliceMut;
    let rx = std::net::UdpSocket::bind(LOOPBACK)?;
    let tx = std::net::UdpSocket::bind(LOOPBACK)?;
    let dst = rx.local_addr()?;
    rx.set_read_timeout(Some(Duration::from_millis(200)))?;
    let rx_state = UdpSocketState::new((&rx).into())?;
    let tx_state = UdpSocketState::new((&tx).into())?;
    let _ = rx_state.set_recv_buffer_size((&rx).into(), 8 << 20);
    let _ = tx_state.set_send_buffer_size((&tx).into(), 8 << 20);
    let segments = tx_state.max_gso_segments().clamp(1, 10);
    let payload = vec![0xa5u8; 1200 * segments];
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            if let Some(core) = sender_core {
                core_affinity::set_for_current(core);
            }
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Transmit {
                    destination: dst,
                    ecn: None,
                    contents: &payload,
                    segment_size: (segments > 1).then_some(1200),
                    src_ip: None,
                };
                let _ = tx_state.send((&tx).into(), &t);
            }
        })
    };
    let gro = rx_state.gro_segments().max(1);
    let batch = quinn_udp::BATCH_SIZE.max(1);
    let mut bufs: Vec<Vec<u8>> = (0..batch).map(|_| vec![0u8; 1500 * gro]).collect();
    let mut meta = vec![RecvMeta::default(); batch];
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        if let Ok(n) = rx_state.recv((&rx).into(), &mut slices, &mut meta) {
            bytes += meta[..n].iter().map(|m| m.len as u64).sum::<u64>();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.join();
    Ok(bytes as f64 * 8.0 / elapsed / 1e9)
}

/// AES-128-GCM with ring on one core: (seal, open, both) in Gbit/s of 1,200-byte packets.
pub(crate) fn limit_aead(secs: f64) -> anyhow::Result<(f64, f64, f64)> {
    use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_128_GCM, &[7u8; 16]).map_err(|_| anyhow::anyhow!("aead key"))?,
    );
    let nonce = |i: u64| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&i.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    };
    let mut packet = vec![0x3cu8; 1200];
    let mut sealed = Vec::new();
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        for _ in 0..1024 {
            let tag = key
                .seal_in_place_separate_tag(nonce(i), Aad::empty(), &mut packet)
                .map_err(|_| anyhow::anyhow!("seal"))?;
            if sealed.len() < 1024 {
                let mut p = packet.clone();
                p.extend_from_slice(tag.as_ref());
                sealed.push((i, p));
            }
            i += 1;
        }
    }
    let seal = (i * 1200) as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9;
    let started = Instant::now();
    let mut opened = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        for (n, p) in &sealed {
            let mut buf = p.clone();
            key.open_in_place(nonce(*n), Aad::empty(), &mut buf)
                .map_err(|_| anyhow::anyhow!("open"))?;
            opened += 1;
        }
    }
    let open = (opened * 1200) as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9;
    Ok((seal, open, 1.0 / (1.0 / seal + 1.0 / open)))
}

/// CPU time of every thread of this process so far (from /proc, Linux), in ns.
pub(crate) fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
