//! The engine's tracing: a client striping from a primary and a secondary in the
//! simulator, under a subscriber that records every span and event. Each session has a
//! span with its handle, id, role and peer; each path's connection a span with its path
//! id, remote address and kind, the client's under their session's; path state changes
//! and the session's establishment are events inside the session's span.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kwik_core::Config;
use kwik_tests::app::payload;
use kwik_tests::cluster::Cluster;
use kwik_tests::net::LinkConfig;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Default)]
struct SpanRec {
    name: &'static str,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct EventRec {
    message: String,
    fields: BTreeMap<String, String>,
    /// Names and fields of the spans around it, innermost first.
    scope: Vec<(String, BTreeMap<String, String>)>,
}

#[derive(Default)]
struct Log {
    spans: BTreeMap<u64, SpanRec>,
    events: Vec<EventRec>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Log>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut rec = SpanRec {
            name: attrs.metadata().name(),
            parent: ctx
                .span(id)
                .and_then(|s| s.parent())
                .map(|p| p.id().into_u64()),
            ..SpanRec::default()
        };
        attrs.record(&mut Fields(&mut rec.fields));
        self.0.lock().unwrap().spans.insert(id.into_u64(), rec);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut log = self.0.lock().unwrap();
        if let Some(rec) = log.spans.get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut rec.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let message = fields.remove("message").unwrap_or_default();
        let mut log = self.0.lock().unwrap();
        let scope = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .map(|s| {
                        let id = s.id().into_u64();
                        let fields = log.spans.get(&id).map(|r| r.fields.clone());
                        (s.name().to_owned(), fields.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        log.events.push(EventRec {
            message,
            fields,
            scope,
        });
    }
}

#[test]
fn sessions_and_paths_have_spans_and_their_events_sit_inside_them() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let link = LinkConfig::default().rate_mbit(50).delay_ms(5).queue_ms(40);
    let mut config = Config::default();
    config.stream_receive_window = 8 << 20;
    let mut c = Cluster::new(
        3,
        &[link, link],
        config.clone(),
        config,
        payload(5, 4 << 20),
    );
    assert!(c.join_all(Duration::from_secs(10)), "the secondary joins");
    c.start_stripe();
    assert!(c.run_to_end(Duration::from_secs(60)), "the body completes");

    let log = recorder.0.lock().unwrap();
    let sessions: Vec<(&u64, &SpanRec)> = log
        .spans
        .iter()
        .filter(|(_, s)| s.name == "session")
        .collect();
    let role = |r: &str| {
        sessions
            .iter()
            .find(|(_, s)| s.fields.get("role").map(String::as_str) == Some(r))
            .unwrap_or_else(|| panic!("no {r} session span in {sessions:?}"))
    };
    let (client_id, client) = role("Client");
    let (_, primary) = role("Primary");
    let (_, secondary) = role("Secondary");
    // The client's span names the primary it dialled; every one has its handle and id.
    assert_eq!(client.fields["peer"], c.addrs[0].to_string());
    for s in [client, primary, secondary] {
        assert!(s.fields.contains_key("handle"), "{s:?}");
        assert!(s.fields["id"].starts_with("0x"), "{s:?}");
    }
    assert_eq!(
        client.fields["id"], primary.fields["id"],
        "one session id on both sides"
    );

    // The client's paths: the primary's and the secondary's, under its session span.
    let client_paths: Vec<&SpanRec> = log
        .spans
        .values()
        .filter(|s| s.name == "path" && s.parent == Some(**client_id))
        .collect();
    let kind_of = |remote: String| {
        client_paths
            .iter()
            .find(|p| p.fields["remote"] == remote)
            .map(|p| (p.fields["kind"].clone(), p.fields["path"].clone()))
    };
    assert_eq!(
        kind_of(c.addrs[0].to_string()),
        Some(("primary".to_owned(), "path 0".to_owned()))
    );
    let (kind, path) = kind_of(c.addrs[1].to_string()).expect("a path span to the secondary");
    assert_eq!(kind, "secondary");
    assert_ne!(path, "path 0");
    // The servers' incoming connections learned their session and path.
    let labelled = log
        .spans
        .values()
        .filter(|s| s.name == "path" && s.parent.is_none() && s.fields.contains_key("session"))
        .count();
    assert!(
        labelled >= 2,
        "primary and secondary connections are labelled"
    );

    // Path state changes sit in a session span and name the path.
    let states: Vec<&EventRec> = log
        .events
        .iter()
        .filter(|e| e.message == "path state")
        .collect();
    assert!(
        states
            .iter()
            .any(|e| e.fields.get("state").map(String::as_str) == Some("Active")),
        "{states:?}"
    );
    for e in &states {
        assert!(e.fields.contains_key("path"), "{e:?}");
        assert!(e.scope.iter().any(|(n, _)| n == "session"), "{e:?}");
    }
    let established = log
        .events
        .iter()
        .find(|e| e.message == "session established")
        .expect("the client logs its session's establishment");
    assert_eq!(
        established.scope[0].1.get("role").map(String::as_str),
        Some("Client")
    );
    // Engine work for a path runs inside its span: some event carries a path scope.
    assert!(
        log.events
            .iter()
            .any(|e| e.scope.iter().any(|(n, _)| n == "path")),
        "no event inside a path span"
    );
}
