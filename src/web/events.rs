//! `GET /jobs/{id}/events`: the job's changes as server-sent events, as they happen. Each
//! event is `event: <type>` and `data: <one JSON object>`; types: `status`,
//! `checkpoint_triggered`, `checkpoint_completed`, `checkpoint_failed`, `restart`,
//! `restored`, `exception`, and `missed` when the client fell so far behind that some were
//! dropped. A comment line every 15 s keeps idle connections open. The stream starts with the
//! current status and ends after the job reached a terminal one.

use super::WebState;
use super::rest::find_job;
use actix_web::web::{self, Bytes};
use actix_web::{HttpResponse, http::header};
use actorflow_runtime::checkpoint::types::JobEvent;
use actorflow_runtime::runtime::observer::{JobUpdate, JobUpdateKind, wall_ms};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

const KEEPALIVE: Duration = Duration::from_secs(15);

/// Events not yet written to the client; a slow client makes the forwarder wait, and then
/// misses updates (it is told how many), rather than the server buffering without bound.
const CLIENT_BUFFER: usize = 64;

struct EventStream(mpsc::Receiver<Bytes>);

impl futures_core::Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|m| m.map(Ok))
    }
}

fn frame(kind: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// The event type and JSON of an update.
pub(crate) fn describe(update: &JobUpdate) -> (&'static str, Value) {
    let t = update.timestamp_ms;
    match &update.kind {
        JobUpdateKind::Status(s) => ("status", json!({"timestamp": t, "status": s.as_str()})),
        JobUpdateKind::CheckpointTriggered { id, kind } => (
            "checkpoint_triggered",
            json!({"timestamp": t, "id": id.0, "kind": format!("{kind:?}")}),
        ),
        JobUpdateKind::Exception(e) => {
            let action = super::json::action(&e.action);
            (
                "exception",
                json!({"timestamp": t, "operator": e.operator, "vertex": e.vertex,
                       "subtask": e.subtask_index, "cause": e.cause, "action": action}),
            )
        }
        JobUpdateKind::Event(ev) => match ev {
            JobEvent::CheckpointCompleted {
                id,
                kind,
                unaligned,
                duration_ms,
                alignment_ms,
                sync_ms,
                async_ms,
                bytes,
                shared_bytes,
                is_final,
            } => (
                "checkpoint_completed",
                json!({"timestamp": t, "id": id.0, "kind": format!("{kind:?}"),
                       "unaligned": unaligned, "duration_ms": duration_ms,
                       "alignment_ms": alignment_ms, "sync_ms": sync_ms, "async_ms": async_ms,
                       "bytes": bytes, "shared_bytes": shared_bytes, "is_final": is_final}),
            ),
            JobEvent::CheckpointAborted { id, reason } => (
                "checkpoint_failed",
                json!({"timestamp": t, "id": id.0, "reason": reason}),
            ),
            JobEvent::Restart {
                attempt,
                cause,
                from_checkpoint,
                delay_ms,
                generation,
            } => (
                "restart",
                json!({"timestamp": t, "attempt": attempt, "cause": cause,
                       "from_checkpoint": from_checkpoint.map(|c| c.0), "delay_ms": delay_ms,
                       "generation": generation}),
            ),
            JobEvent::Restored {
                checkpoint,
                generation,
            } => (
                "restored",
                json!({"timestamp": t, "checkpoint": checkpoint.map(|c| c.0),
                       "generation": generation}),
            ),
        },
    }
}

pub(super) async fn events(state: web::Data<WebState>, path: web::Path<String>) -> HttpResponse {
    let job = match find_job(&state, &path) {
        Ok(j) => j,
        Err(response) => return response,
    };
    let observer = job.control.observer().clone();
    // Subscribed before the current status is read: nothing falls between the two.
    let mut updates = observer.subscribe();
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    actix_web::rt::spawn(async move {
        let status = observer.status();
        let first = frame(
            "status",
            &json!({"timestamp": wall_ms(), "status": status.as_str()}),
        );
        if tx.send(first).await.is_err() || status.is_terminal() {
            return;
        }
        let mut keepalive = actix_web::rt::time::interval(KEEPALIVE);
        keepalive.tick().await;
        loop {
            let out = tokio::select! {
                u = updates.recv() => match u {
                    Ok(u) => {
                        let (kind, data) = describe(&u);
                        let end = matches!(u.kind, JobUpdateKind::Status(s) if s.is_terminal());
                        if tx.send(frame(kind, &data)).await.is_err() || end {
                            return;
                        }
                        continue;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => frame("missed", &json!({"count": n})),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(EventStream(rx))
}
