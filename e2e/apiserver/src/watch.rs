//! Watch streams: newline-delimited JSON events over a chunked response, resumable from a
//! resourceVersion, with bookmarks, `sendInitialEvents`, 410 Gone for compacted versions,
//! and the frozen/closed behaviours fault injection asks for.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::db::Db;
use crate::identity::UserInfo;
use crate::registry::ResourceType;
use crate::request::Query;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{EventKind, LogEntry};

/// Longest a watch stays open when the client does not say (kube-apiserver picks 30–60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, object: &Value) -> bool {
        self.labels.matches_object(object) && self.fields.matches(object)
    }

    /// The event type a watcher with these selectors sees for a write, if any.
    fn event_type(&self, entry: &LogEntry) -> Option<&'static str> {
        let now = self.matches(&entry.object);
        let before = entry.old.as_deref().is_some_and(|o| self.matches(o));
        match entry.kind {
            EventKind::Added => now.then_some("ADDED"),
            EventKind::Deleted => now.then_some("DELETED"),
            EventKind::Modified => match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
        }
    }
}

fn line(event_type: &str, object: &Value) -> Bytes {
    let mut bytes =
        serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn bookmark(rt: &ResourceType, revision: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata}),
    )
}

/// What every open watch listens to besides its own events: thaws of frozen watches, and the
/// bookmark interval.
#[derive(Debug)]
pub(crate) struct WatchHub {
    thaws: watch::Sender<u64>,
    bookmark_interval: Duration,
}

impl WatchHub {
    pub fn new(bookmark_interval: Duration) -> Self {
        Self {
            thaws: watch::channel(0).0,
            bookmark_interval,
        }
    }

    /// Tells frozen watches to check whether they may deliver what they held back.
    pub fn thawed(&self) {
        self.thaws.send_modify(|n| *n += 1);
    }
}

/// Starts a watch; the response streams until timeout, client disconnect or `close_watches`.
pub(crate) fn serve(
    db: Arc<Db>,
    hub: &WatchHub,
    rt: ResourceType,
    namespace: Option<String>,
    query: Query,
    user: UserInfo,
) -> Response {
    let filter = match (
        LabelSelector::parse(query.get("labelSelector").unwrap_or_default()),
        FieldSelector::parse(query.get("fieldSelector").unwrap_or_default()),
    ) {
        (Ok(labels), Ok(fields)) => Filter { labels, fields },
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    let send_initial_events = query.flag("sendInitialEvents");
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let from = match query.get("resourceVersion") {
        None | Some("0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return ApiError::bad_request(format!("invalid resource version {rv:?}"))
                    .into_response();
            }
        },
    };

    let (out_tx, out_rx) = mpsc::channel::<Bytes>(256);
    let subscription = {
        let mut state = db.state();
        let revision = state.store.revision();
        let initial = if from.is_none() || send_initial_events {
            state.store.list(&rt.key(), namespace.as_deref())
        } else {
            vec![]
        };
        let resume_from = if from.is_none() || send_initial_events {
            None
        } else {
            from
        };
        state
            .store
            .subscribe(&rt.key(), namespace.as_deref(), resume_from)
            .map(|(backlog, live)| (initial, backlog, live, revision))
    };
    let counted = rt.plural.clone();
    let thaws = hub.thaws.subscribe();
    let bookmark_interval = hub.bookmark_interval;
    match subscription {
        Err(too_old) => {
            let status = ApiError::gone(format!(
                "too old resource version: {} ({})",
                from.unwrap_or_default(),
                too_old.oldest
            ))
            .to_status();
            let _ = out_tx.try_send(line("ERROR", &status));
        }
        Ok((initial, backlog, live, revision)) => {
            tokio::spawn(async move {
                let stream = WatchStream {
                    db,
                    thaws,
                    bookmark_interval,
                    rt,
                    user: user.username,
                    counted,
                    filter,
                    out: out_tx,
                    held: vec![],
                };
                stream
                    .run(
                        initial,
                        send_initial_events,
                        backlog,
                        live,
                        revision,
                        bookmarks,
                        timeout,
                    )
                    .await;
            });
        }
    }
    let body = futures::stream::unfold(out_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|e| ApiError::internal(e.to_string()).into_response())
}

struct WatchStream {
    db: Arc<Db>,
    thaws: watch::Receiver<u64>,
    bookmark_interval: Duration,
    rt: ResourceType,
    user: String,
    counted: String,
    filter: Filter,
    out: mpsc::Sender<Bytes>,
    /// Events held back while the watch is frozen.
    held: Vec<Arc<LogEntry>>,
}

impl WatchStream {
    fn frozen(&self) -> bool {
        self.db.state().faults.is_frozen(&self.counted, &self.user)
    }

    async fn emit(&self, entry: &LogEntry) -> bool {
        match self.filter.event_type(entry) {
            Some(event_type) => self.out.send(line(event_type, &entry.object)).await.is_ok(),
            None => true,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        mut self,
        initial: Vec<Arc<Value>>,
        send_initial_events: bool,
        backlog: Vec<Arc<LogEntry>>,
        mut live: mpsc::UnboundedReceiver<Arc<LogEntry>>,
        revision: u64,
        bookmarks: bool,
        timeout: Duration,
    ) {
        for object in initial.iter().filter(|o| self.filter.matches(o)) {
            if self.out.send(line("ADDED", object)).await.is_err() {
                return;
            }
        }
        if send_initial_events
            && self
                .out
                .send(bookmark(&self.rt, revision, true))
                .await
                .is_err()
        {
            return;
        }
        for entry in &backlog {
            if !self.emit(entry).await {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(self.bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                // A closed watch (close_watches) delivers nothing more, even what it held.
                biased;
                entry = live.recv() => {
                    let Some(entry) = entry else { return };
                    if self.frozen() {
                        self.held.push(entry);
                    } else if !self.emit(&entry).await {
                        return;
                    }
                }
                changed = self.thaws.changed() => {
                    if changed.is_err() { return; }
                    if !self.frozen() {
                        for entry in std::mem::take(&mut self.held) {
                            if !self.emit(&entry).await { return; }
                        }
                    }
                }
                _ = ticker.tick(), if bookmarks => {
                    if self.frozen() || !self.held.is_empty() {
                        continue;
                    }
                    // Everything already queued has a revision at or below the current one:
                    // send it first so the bookmark never runs ahead of delivered events.
                    let (queued, current) = {
                        let state = self.db.state();
                        let mut queued = vec![];
                        while let Ok(entry) = live.try_recv() {
                            queued.push(entry);
                        }
                        (queued, state.store.revision())
                    };
                    for entry in &queued {
                        if !self.emit(entry).await { return; }
                    }
                    if self.out.send(bookmark(&self.rt, current, false)).await.is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = self.out.closed() => return,
            }
        }
    }
}
