//! What `server --metrics` and `secondary --metrics` serve: a primary and a secondary on
//! loopback stripe a body to a client while the Prometheus endpoint is scraped over HTTP.
//! The counters move during the transfer, and every kind of figure shows up.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kwik_core::GroupKey;
use kwik_examples::{
    BodyCheck, bulk_config, client_config, self_signed, serve, serve_metrics, server_config,
    wait_paths,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY: u64 = 48 << 20;

/// One GET of the metrics page, as a scraper sends it.
async fn scrape(addr: SocketAddr) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: kwik\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The sum of every series of `name` whose labels include `labels`.
fn sum(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum::<f64>()
        + 0.0
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_endpoint_counts_a_striped_transfer() {
    let metrics = free_port();
    serve_metrics(metrics).unwrap();
    let (cert, key) = self_signed().unwrap();
    let group = GroupKey::new([7; 32]);
    let listen = |secondaries: Vec<SocketAddr>| {
        let mut config = server_config(&cert, &key, bulk_config()).unwrap();
        config.group_key(group.clone());
        let endpoint = kwik_tokio::listen("127.0.0.1:0".parse().unwrap(), config).unwrap();
        let addr = endpoint.local_addr().unwrap();
        tokio::spawn(serve(endpoint, secondaries, "localhost".to_owned()));
        addr
    };
    let secondary = listen(Vec::new());
    let primary = listen(vec![secondary]);

    let before = scrape(metrics).await;
    let config = client_config(&cert, bulk_config()).unwrap();
    let session = kwik_tokio::dial(primary, "localhost", config)
        .await
        .unwrap();
    wait_paths(&session, 1, Duration::from_secs(10))
        .await
        .unwrap();
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send.write_all(format!("body {BODY}").as_bytes())
        .await
        .unwrap();
    send.finish().unwrap();
    let mut check = BodyCheck::default();
    while check.received() < BODY / 4 {
        let chunk = recv.read_chunk(usize::MAX).await.unwrap().unwrap();
        check.update(&chunk);
    }
    // Mid-transfer (the reader holds the rest back): the next sample shows the bytes.
    let deadline = Instant::now() + Duration::from_secs(5);
    let during = loop {
        let page = scrape(metrics).await;
        if sum(&page, "kwik_path_bytes_total", &[("kind", "secondary")]) > 0.0
            || Instant::now() > deadline
        {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    while let Some(chunk) = recv.read_chunk(usize::MAX).await.unwrap() {
        check.update(&chunk);
    }
    check.verify(BODY).unwrap();
    // One more sample interval, so that the end of the transfer is counted.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = scrape(metrics).await;

    let udp = |page: &str| sum(page, "kwik_udp_bytes_total", &[]);
    let secondary_tx = |page: &str| {
        sum(
            page,
            "kwik_path_bytes_total",
            &[("kind", "secondary"), ("direction", "tx")],
        )
    };
    println!(
        "udp bytes: before {} during {} after {}",
        udp(&before),
        udp(&during),
        udp(&after)
    );
    assert_eq!(udp(&before), 0.0, "{before}");
    assert!(udp(&during) > 0.0, "{during}");
    assert!(udp(&after) > udp(&during), "{after}");
    // The secondary sent its share; the client received it on its secondary path.
    assert!(secondary_tx(&during) > 0.0, "{during}");
    assert!(secondary_tx(&after) > secondary_tx(&during), "{after}");
    assert!(
        sum(
            &after,
            "kwik_path_stream_bytes_total",
            &[("direction", "rx")]
        ) >= BODY as f64,
        "{after}"
    );
    for role in ["client", "primary", "secondary"] {
        assert!(
            sum(&after, "kwik_sessions_opened_total", &[("role", role)]) >= 1.0,
            "{role}: {after}"
        );
    }
    assert!(
        sum(&after, "kwik_stripe_chunks_total", &[]) > 0.0,
        "{after}"
    );
    assert!(
        sum(&after, "kwik_stripes_finished_total", &[]) >= 1.0,
        "{after}"
    );
    assert!(
        sum(&after, "kwik_path_events_total", &[("event", "active")]) >= 1.0,
        "{after}"
    );
    assert!(
        sum(&after, "kwik_control_messages_total", &[]) > 0.0,
        "{after}"
    );
    assert!(
        sum(&after, "kwik_paths", &[("state", "active")]) >= 2.0,
        "{after}"
    );
    assert!(
        sum(
            &after,
            "kwik_path_rtt_seconds_count",
            &[("kind", "secondary")]
        ) > 0.0,
        "{after}"
    );
    assert_eq!(sum(&after, "kwik_protocol_violations_total", &[]), 0.0);
    session.close(0u32.into(), b"done");
}
