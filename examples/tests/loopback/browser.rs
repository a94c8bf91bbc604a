//! A real browser reaches a KWIK server: headless Chromium loads a page from this test's own
//! HTTP listener on `http://localhost` (a secure context), whose script opens a WebTransport
//! session to `webtransport_echo`'s server with `serverCertificateHashes`, echoes 100
//! bidirectional and 10 unidirectional streams and 1,000 datagrams paced by
//! `writer.ready`, closes with a code and reason, and reports what it saw back to the
//! listener. The test asserts the report, and that the server saw a plain session closed
//! with that code and reason.
//!
//! Chromium comes from Debian's `chromium` package, which `.ci/run` installs. Without it the
//! test says that it skipped and why; with `CI` set it must run, and fails if it cannot.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kwik_async::Mode;
use kwik_examples::webtransport::{Ended, serve};
use kwik_examples::{cert_hash, self_signed, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CHROMIUM: &str = "/usr/bin/chromium";
const BIDI: usize = 100;
const UNI: usize = 10;
const DATAGRAMS: usize = 1000;
const CLOSE_CODE: u32 = 4242;
const CLOSE_REASON: &str = "browser done";

/// The page; the `__NAME__` placeholders are filled in.
const PAGE: &str = r#"<!doctype html>
<html><body><script>
const enc = new TextEncoder(), dec = new TextDecoder();
const report = (r) => fetch('/report', {method: 'POST', body: JSON.stringify(r)});
const progress = (step) => fetch('/progress', {method: 'POST', body: step});
async function readAll(readable) {
  const reader = readable.getReader();
  const parts = [];
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    parts.push(...value);
  }
  return new Uint8Array(parts);
}
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
(async () => {
  const r = {ok: false, bidi: 0, uni: 0, datagrams: 0, step: 'connect'};
  try {
    const wt = new WebTransport('__URL__', {
      serverCertificateHashes: [{algorithm: 'sha-256', value: new Uint8Array(__HASH__)}],
    });
    progress('loaded');
    await wt.ready;
    r.step = 'bidi';
    progress(r.step);
    await Promise.all([...Array(__BIDI__).keys()].map(async (i) => {
      const s = await wt.createBidirectionalStream();
      const msg = enc.encode(`bidi ${i} ` + 'x'.repeat(i * 37));
      const w = s.writable.getWriter();
      await w.write(msg);
      await w.close();
      if (same(await readAll(s.readable), msg)) r.bidi++;
    }));
    r.step = 'uni';
    progress(r.step);
    const sent = new Set();
    for (let i = 0; i < __UNI__; i++) {
      const s = await wt.createUnidirectionalStream();
      const w = s.getWriter();
      const msg = `uni ${i} ` + 'y'.repeat(i * 101);
      sent.add(msg);
      await w.write(enc.encode(msg));
      await w.close();
      progress(`uni ${i} sent`);
    }
    const incoming = wt.incomingUnidirectionalStreams.getReader();
    for (let i = 0; i < __UNI__; i++) {
      const {value} = await incoming.read();
      progress(`uni ${i} accepted`);
      if (sent.delete(dec.decode(await readAll(value)))) r.uni++;
      progress(`uni ${i} read`);
    }
    r.step = 'datagrams';
    progress(r.step);
    const want = new Set();
    const dr = wt.datagrams.readable.getReader();
    const receiving = (async () => {
      for (;;) {
        const {value, done} = await dr.read();
        if (done) return;
        if (want.delete(dec.decode(value))) r.datagrams++;
      }
    })();
    const writable = wt.datagrams.createWritable ? wt.datagrams.createWritable() : wt.datagrams.writable;
    const dw = writable.getWriter();
    for (let i = 0; i < __DATAGRAMS__; i++) {
      await dw.ready;
      const d = `datagram ${i}`;
      want.add(d);
      dw.write(enc.encode(d));
    }
    // Until every echo is in, or a second passes without one.
    let last = -1;
    while (r.datagrams < __DATAGRAMS__ && r.datagrams !== last) {
      last = r.datagrams;
      await new Promise((ok) => setTimeout(ok, 1000));
    }
    r.step = 'close';
    progress(r.step);
    wt.close({closeCode: __CODE__, reason: '__REASON__'});
    await wt.closed;
    r.ok = true;
  } catch (e) {
    r.error = String(e);
  }
  await report(r);
})();
</script></body></html>
"#;

/// Kills the browser when the test ends, however it ends.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves `page` at any GET and hands the body of the first POST to `report`.
async fn http_listener(
    listener: TcpListener,
    page: String,
    report: tokio::sync::mpsc::UnboundedSender<String>,
) {
    while let Ok((mut conn, _)) = listener.accept().await {
        let page = page.clone();
        let report = report.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // The head, then as much body as its Content-Length says.
            let (head_end, length) = loop {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (end + 4, length);
                }
            };
            while buf.len() < head_end + length {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = if buf.starts_with(b"POST /report") {
                let _ = report.send(String::from_utf8_lossy(&buf[head_end..]).into_owned());
                String::new()
            } else if buf.starts_with(b"POST /progress") {
                println!("the page: {}", String::from_utf8_lossy(&buf[head_end..]));
                String::new()
            } else if buf.starts_with(b"GET / ") {
                page
            } else {
                String::new()
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
        });
    }
}

/// A figure of the page's JSON report.
fn field(report: &str, name: &str) -> Option<String> {
    let at = report.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = &report[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_owned())
}

fn number(report: &str, name: &str) -> usize {
    field(report, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

#[test]
fn a_browser_echoes_over_webtransport_with_a_kwik_server() {
    if !Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and {CHROMIUM} is missing: .ci/run installs Debian's chromium"
        );
        println!("skipped: {CHROMIUM} is missing (apt-get install chromium)");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (cert, key) = self_signed().unwrap();
        let mut config = kwik_examples::bulk_config();
        config.app_protocols = vec![kwik_h3::ALPN.to_vec()];
        let server = kwik_tokio::listen(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            server_config(&cert, &key, config).unwrap(),
        )
        .unwrap();
        let wt_addr = server.local_addr().unwrap();
        let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(serve(server, Some(ended_tx)));

        let page = PAGE
            .replace("__URL__", &format!("https://{wt_addr}/echo"))
            .replace("__HASH__", &format!("{:?}", cert_hash(&cert)))
            .replace("__BIDI__", &BIDI.to_string())
            .replace("__UNI__", &UNI.to_string())
            .replace("__DATAGRAMS__", &DATAGRAMS.to_string())
            .replace("__CODE__", &CLOSE_CODE.to_string())
            .replace("__REASON__", CLOSE_REASON);
        assert!(!page.contains("__"), "every placeholder filled");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_port = listener.local_addr().unwrap().port();
        let (report_tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(http_listener(listener, page, report_tx));

        let profile = std::env::temp_dir().join(format!("kwik-chromium-{}", std::process::id()));
        let log = std::env::temp_dir().join(format!("kwik-chromium-{}.log", std::process::id()));
        let _browser = Browser(
            Command::new(CHROMIUM)
                .args([
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg(format!("http://localhost:{http_port}/"))
                .stdout(Stdio::null())
                .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
                .spawn()
                .expect("chromium starts"),
        );
        let Ok(Some(report)) = tokio::time::timeout(Duration::from_secs(90), reports.recv()).await
        else {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "the page did not report within 90 s; chromium's log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        };
        let _ = std::fs::remove_file(&log);
        println!("the page reported {report}");
        let _ = std::fs::remove_dir_all(&profile);
        assert_eq!(field(&report, "ok").as_deref(), Some("true"), "{report}");
        assert_eq!(number(&report, "bidi"), BIDI, "bidirectional echoes exact");
        assert_eq!(number(&report, "uni"), UNI, "unidirectional echoes exact");
        let datagrams = number(&report, "datagrams");
        assert!(
            datagrams >= 990,
            "{datagrams} of {DATAGRAMS} datagrams echoed exact"
        );
        let Ended { mode, closed } = tokio::time::timeout(Duration::from_secs(30), ended.recv())
            .await
            .expect("the server's session ended")
            .unwrap()
            .unwrap();
        assert_eq!(mode, Mode::Plain, "a browser is a plain session");
        assert_eq!(closed.code, CLOSE_CODE);
        assert_eq!(closed.reason, CLOSE_REASON);
    });
}
