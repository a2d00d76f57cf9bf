//! The REST endpoints. Paths and JSON field names follow Flink's REST API where Flink has the
//! endpoint; `/watermarks/explain` and `/events` are ours. Errors are JSON
//! (`{"errors": [...]}`) with a status: 400 for a malformed id or parameter, 401 without the
//! token, 404 for an unknown job, vertex or checkpoint, 409 when the job cannot do it now.

// An error here is the response itself, returned at once: boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use super::json::{self, NO_WATERMARK, vertex_subtasks};
use super::{JobEntry, Trigger, WebState};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use actorflow_runtime::runtime::observer::{JobId, JobStatus, VertexInfo, wall_ms};
use serde_json::{Value, json};
use std::sync::Arc;

type State = web::Data<WebState>;

/// Every route of the server.
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(super::dashboard::index))
        .route("/app.js", web::get().to(super::dashboard::script))
        .route("/style.css", web::get().to(super::dashboard::style))
        .route("/metrics", web::get().to(super::prometheus::metrics))
        .route("/config", web::get().to(config))
        .route("/overview", web::get().to(overview))
        .route("/jobs", web::get().to(jobs))
        .route("/jobs/overview", web::get().to(jobs_overview))
        .route("/jobs/{jid}", web::get().to(job))
        .route("/jobs/{jid}", web::patch().to(patch_job))
        .route("/jobs/{jid}/plan", web::get().to(plan))
        .route("/jobs/{jid}/exceptions", web::get().to(exceptions))
        .route("/jobs/{jid}/events", web::get().to(super::events::events))
        .route("/jobs/{jid}/checkpoints", web::get().to(checkpoints))
        .route(
            "/jobs/{jid}/checkpoints/config",
            web::get().to(checkpoint_config),
        )
        .route(
            "/jobs/{jid}/checkpoints/details/{cid}",
            web::get().to(checkpoint_details),
        )
        .route(
            "/jobs/{jid}/checkpoints/details/{cid}/subtasks/{vid}",
            web::get().to(checkpoint_subtasks),
        )
        .route("/jobs/{jid}/savepoints", web::post().to(trigger_savepoint))
        .route(
            "/jobs/{jid}/savepoints/{tid}",
            web::get().to(savepoint_status),
        )
        .route("/jobs/{jid}/stop", web::post().to(stop_job))
        .route("/jobs/{jid}/vertices/{vid}", web::get().to(vertex))
        .route(
            "/jobs/{jid}/vertices/{vid}/backpressure",
            web::get().to(backpressure),
        )
        .route(
            "/jobs/{jid}/vertices/{vid}/watermarks",
            web::get().to(watermarks),
        )
        .route(
            "/jobs/{jid}/vertices/{vid}/watermarks/explain",
            web::get().to(explain),
        )
        .route(
            "/jobs/{jid}/vertices/{vid}/metrics",
            web::get().to(vertex_metrics),
        )
        .route(
            "/jobs/{jid}/vertices/{vid}/subtasks/{index}/metrics",
            web::get().to(subtask_metrics),
        )
        .default_service(web::to(not_found));
}

/// An error response: status and Flink's `{"errors": [message]}`.
pub(super) fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json::errors(message))
}

fn ok(body: Value) -> HttpResponse {
    HttpResponse::Ok().json(body)
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        &format!("Not found: {} {}", req.method(), req.path()),
    )
}

/// The job `jid` names: 400 if it is not 32 hex digits, 404 if there is no such job.
pub(super) fn find_job(state: &WebState, jid: &str) -> Result<Arc<JobEntry>, HttpResponse> {
    if let Err(e) = JobId::parse(jid) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("invalid job id: {e}"),
        ));
    }
    state
        .job(jid)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, &format!("Job {jid} not found")))
}

fn find_vertex<'a>(job: &'a JobEntry, vid: &str) -> Result<&'a VertexInfo, HttpResponse> {
    if JobId::parse(vid).is_err() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("invalid vertex id {vid:?}: expected 32 hex digits"),
        ));
    }
    job.control.observer().vertex(vid).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            &format!(
                "Vertex {vid} not found in job {}",
                job.control.observer().id()
            ),
        )
    })
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(response) => return response,
        }
    };
}

/// True if the request carries `Authorization: Bearer <token>`.
fn authorized(state: &WebState, req: &HttpRequest) -> bool {
    let Some(value) = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(given) = value.strip_prefix("Bearer ") else {
        return false;
    };
    // Compare every byte, so the time taken says nothing about where they differ.
    let (a, b) = (given.trim().as_bytes(), state.token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header(("WWW-Authenticate", "Bearer"))
        .json(json::errors(
            "this request changes a job: it needs the header `Authorization: Bearer TOKEN` \
             with the token the server printed at start (or the one set with --web-token)",
        ))
}

fn query_param<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.query_string()
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A JSON object body, or an empty one: 400 for anything else.
fn json_body(body: &[u8]) -> Result<serde_json::Map<String, Value>, HttpResponse> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "the request body must be a JSON object",
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("the request body is not valid JSON: {e}"),
        )),
    }
}

async fn config(state: State) -> HttpResponse {
    ok(json!({
        "refresh-interval": 1000,
        "timezone-name": "UTC",
        "timezone-offset": 0,
        "flink-version": "actorflow",
        "actorflow-version": env!("CARGO_PKG_VERSION"),
        "flink-revision": "",
        "features": { "web-submit": false, "web-cancel": true, "web-history": false },
        "server-start-time": state.started_ms,
    }))
}

async fn overview(state: State) -> HttpResponse {
    let jobs = state.jobs();
    let count = |f: fn(JobStatus) -> bool| {
        jobs.iter()
            .filter(|j| f(j.control.observer().status()))
            .count()
    };
    let slots: u32 = jobs
        .iter()
        .filter(|j| !j.control.observer().status().is_terminal())
        .flat_map(|j| {
            j.control
                .observer()
                .vertices()
                .iter()
                .map(|v| v.parallelism)
        })
        .sum();
    ok(json!({
        "taskmanagers": 1,
        "slots-total": slots,
        "slots-available": 0,
        "jobs-running": count(|s| !s.is_terminal()),
        "jobs-finished": count(|s| s == JobStatus::Finished),
        "jobs-cancelled": count(|s| s == JobStatus::Canceled),
        "jobs-failed": count(|s| s == JobStatus::Failed),
        "flink-version": "actorflow",
        "actorflow-version": env!("CARGO_PKG_VERSION"),
        "flink-commit": "",
    }))
}

async fn jobs(state: State) -> HttpResponse {
    let list: Vec<Value> = state
        .jobs()
        .iter()
        .rev()
        .map(|j| {
            let o = j.control.observer();
            json!({ "id": o.id().to_string(), "status": o.status().as_str() })
        })
        .collect();
    ok(json!({ "jobs": list }))
}

async fn jobs_overview(state: State) -> HttpResponse {
    let list: Vec<Value> = state
        .jobs()
        .iter()
        .rev()
        .map(|j| json::job_overview(j, &j.sampled().0))
        .collect();
    ok(json!({ "jobs": list }))
}

async fn job(state: State, path: web::Path<String>) -> HttpResponse {
    let job = tri!(find_job(&state, &path));
    let (metrics, _) = job.sampled();
    let mut body = json::job_details(&job, &metrics);
    body["plan-text"] = json!(job.plan_text);
    ok(body)
}

async fn patch_job(state: State, req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let job = tri!(find_job(&state, &path));
    if !authorized(&state, &req) {
        return unauthorized();
    }
    match query_param(&req, "mode") {
        None | Some("cancel") => {}
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "unknown mode {other:?}: only mode=cancel is supported (use POST /jobs/{{id}}/stop to stop with a savepoint)"
                ),
            );
        }
    }
    if job.control.observer().status().is_terminal() {
        return error(
            StatusCode::CONFLICT,
            &format!(
                "job {} is already {}",
                job.control.observer().id(),
                job.control.observer().status().as_str()
            ),
        );
    }
    job.control.cancel();
    HttpResponse::Accepted().json(json!({}))
}

async fn plan(state: State, path: web::Path<String>) -> HttpResponse {
    let job = tri!(find_job(&state, &path));
    ok(json::plan(&job))
}

async fn exceptions(state: State, path: web::Path<String>) -> HttpResponse {
    let job = tri!(find_job(&state, &path));
    let metrics = job.control.metrics();
    ok(json::exceptions(
        &metrics,
        job.control.observer().vertices(),
    ))
}

async fn checkpoints(state: State, path: web::Path<String>) -> HttpResponse {
    let job = tri!(find_job(&state, &path));
    ok(json::checkpoints(job.control.observer()))
}

async fn checkpoint_config(state: State, path: web::Path<String>) -> HttpResponse {
    let job = tri!(find_job(&state, &path));
    let Some(c) = job.control.observer().checkpoint_config() else {
        return error(
            StatusCode::NOT_FOUND,
            "Checkpointing is not enabled for this job",
        );
    };
    ok(json!({
        "mode": c.mode.to_ascii_lowercase(),
        "interval": c.interval_ms,
        "timeout": c.timeout_ms,
        "min_pause": c.min_pause_ms,
        "max_concurrent": c.max_concurrent,
        "externalization": { "enabled": true, "delete_on_cancellation": false },
        "state_backend": "HashMapStateBackend",
        "checkpoint_storage": c.store,
        "unaligned_checkpoints": c.unaligned,
        "tolerable_failed_checkpoints": c.tolerable_failed,
        "aligned_checkpoint_timeout": c.aligned_timeout_ms,
        "checkpoints_after_tasks_finish": true,
        "state_changelog_enabled": false,
        "is_incremental": c.incremental,
        "retained": c.retained,
    }))
}

fn parse_checkpoint_id(cid: &str) -> Result<u64, HttpResponse> {
    cid.parse::<u64>().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("invalid checkpoint id {cid:?}: expected a number"),
        )
    })
}

async fn checkpoint_details(state: State, path: web::Path<(String, String)>) -> HttpResponse {
    let (jid, cid) = path.into_inner();
    let job = tri!(find_job(&state, &jid));
    let id = tri!(parse_checkpoint_id(&cid));
    let o = job.control.observer();
    match o.checkpoint(id) {
        Some(c) => {
            let location = o.checkpoint_config().map_or("", |c| c.store.as_str());
            ok(json::checkpoint(&c, o.vertices(), location))
        }
        None => error(
            StatusCode::NOT_FOUND,
            &format!(
                "Could not find checkpointing statistics for checkpoint {id} (the history keeps the newest {})",
                actorflow_runtime::runtime::observer::CHECKPOINT_HISTORY
            ),
        ),
    }
}

async fn checkpoint_subtasks(
    state: State,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    let (jid, cid, vid) = path.into_inner();
    let job = tri!(find_job(&state, &jid));
    let id = tri!(parse_checkpoint_id(&cid));
    let vertex = tri!(find_vertex(&job, &vid));
    match job.control.observer().checkpoint(id) {
        Some(c) => ok(json::checkpoint_subtasks(&c, vertex)),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("Could not find checkpointing statistics for checkpoint {id}"),
        ),
    }
}

fn request_id() -> String {
    actorflow_runtime::JobId::generate().to_string()
}

/// Starts a savepoint (and a stop after it, if `stop`) on the server's runtime; its status is
/// kept under a new request id.
fn start_savepoint(state: &State, job: &Arc<JobEntry>, stop: bool) -> HttpResponse {
    let status = job.control.observer().status();
    if !super::accepts_savepoints(status) {
        return error(
            StatusCode::CONFLICT,
            &format!(
                "job {} is {}: a savepoint needs a running job",
                job.control.observer().id(),
                status.as_str()
            ),
        );
    }
    let Some(ck) = job.control.observer().checkpoint_config() else {
        return error(
            StatusCode::CONFLICT,
            "the job does not checkpoint: a savepoint needs a checkpoint store (enable checkpointing)",
        );
    };
    let location = ck.store.clone();
    let jid = job.control.observer().id().to_string();
    let rid = request_id();
    state.set_trigger(&jid, &rid, Trigger::InProgress);
    let (state, control, r) = (state.clone(), job.control.clone(), rid.clone());
    actix_web::rt::spawn(async move {
        let result = if stop {
            control.stop_with_savepoint().await
        } else {
            control.trigger_savepoint().await
        };
        let t = match result {
            Ok(id) => Trigger::Completed {
                id: id.0,
                location: format!("{location}#{}", id.0),
            },
            Err(e) => Trigger::Failed(e),
        };
        state.set_trigger(&jid, &r, t);
    });
    HttpResponse::Accepted().json(json!({ "request-id": rid }))
}

/// Rejects `target-directory`: savepoints go to the job's checkpoint store.
fn check_no_target(body: &serde_json::Map<String, Value>) -> Result<(), HttpResponse> {
    for key in ["target-directory", "targetDirectory"] {
        if body.get(key).is_some_and(|v| !v.is_null()) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "{key} is not supported: savepoints are written to the job's checkpoint store (see checkpoints/config), from which `--restore` or RestoreFrom::Checkpoint(id) restores them"
                ),
            ));
        }
    }
    Ok(())
}

async fn trigger_savepoint(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let job = tri!(find_job(&state, &path));
    if !authorized(&state, &req) {
        return unauthorized();
    }
    let body = tri!(json_body(&body));
    tri!(check_no_target(&body));
    let cancel = match body.get("cancel-job") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return error(StatusCode::BAD_REQUEST, "cancel-job must be true or false"),
    };
    start_savepoint(&state, &job, cancel)
}

async fn stop_job(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let job = tri!(find_job(&state, &path));
    if !authorized(&state, &req) {
        return unauthorized();
    }
    let body = tri!(json_body(&body));
    tri!(check_no_target(&body));
    if body.get("drain").is_some_and(|v| v == &Value::Bool(true)) {
        return error(
            StatusCode::BAD_REQUEST,
            "drain=true (end of event time before the savepoint) is not supported",
        );
    }
    start_savepoint(&state, &job, true)
}

async fn savepoint_status(state: State, path: web::Path<(String, String)>) -> HttpResponse {
    let (jid, tid) = path.into_inner();
    let _job = tri!(find_job(&state, &jid));
    if JobId::parse(&tid).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("invalid request id {tid:?}: expected 32 hex digits"),
        );
    }
    match state.trigger(&jid, &tid) {
        None => error(
            StatusCode::NOT_FOUND,
            &format!("There is no savepoint request {tid} for job {jid}"),
        ),
        Some(Trigger::InProgress) => ok(json!({ "status": { "id": "IN_PROGRESS" } })),
        Some(Trigger::Completed { id, location }) => ok(json!({
            "status": { "id": "COMPLETED" },
            "operation": { "location": location, "checkpoint-id": id },
        })),
        Some(Trigger::Failed(cause)) => ok(json!({
            "status": { "id": "COMPLETED" },
            "operation": { "failure-cause": { "class": "SavepointFailure", "stack-trace": cause, "serialized-throwable": null } },
        })),
    }
}

async fn vertex(state: State, path: web::Path<(String, String)>) -> HttpResponse {
    let (jid, vid) = path.into_inner();
    let job = tri!(find_job(&state, &jid));
    let v = tri!(find_vertex(&job, &vid));
    let o = job.control.observer();
    let (metrics, rates) = job.sampled();
    let subs = vertex_subtasks(o.vertices(), v, &metrics.subtasks);
    let subrates = vertex_subtasks(o.vertices(), v, &rates);
    let subtasks: Vec<Value> = subs
        .iter()
        .enumerate()
        .map(|(i, s)| json::subtask(s, subrates.get(i), o.start_ms(), metrics.restarts))
        .collect();
    ok(json!({
        "id": v.id,
        "name": v.name,
        "parallelism": v.parallelism,
        "maxParallelism": v.max_parallelism,
        "now": wall_ms(),
        "status": json::vertex_status(subs),
        "operators": v.operators,
        "subtasks": subtasks,
    }))
}

async fn backpressure(state: State, path: web::Path<(String, String)>) -> HttpResponse {
    let (jid, vid) = path.into_inner();
    let job = tri!(find_job(&state, &jid));
    let v = tri!(find_vertex(&job, &vid));
    let o = job.control.observer();
    let (_, rates) = job.sampled();
    let subrates = vertex_subtasks(o.vertices(), v, &rates);
    let mut worst: f64 = 0.0;
    let subtasks: Vec<Value> = subrates
        .iter()
        .map(|r| {
            let ratio = (r.backpressured_ms_per_sec / 1000.0).clamp(0.0, 1.0);
            worst = worst.max(ratio);
            json!({
                "subtask": r.subtask_index,
                "attemptNumber": 0,
                "backpressureLevel": json::backpressure_level(ratio),
                "ratio": ratio,
                "idleRatio": (r.idle_ms_per_sec / 1000.0).clamp(0.0, 1.0),
                "busyRatio": (r.busy_ms_per_sec / 1000.0).clamp(0.0, 1.0),
            })
        })
        .collect();
    ok(json!({
        "status": "ok",
        "backpressureLevel": json::backpressure_level(worst),
        "end-timestamp": wall_ms(),
        "subtasks": subtasks,
    }))
}

async fn watermarks(state: State, path: web::Path<(String, String)>) -> HttpResponse {
    let (jid, vid) = path.into_inner();
    let job = tri!(find_job(&state, &jid));
    let v = tri!(find_vertex(&job, &vid));
    let o = job.control.observer();
    let metrics = job.control.metrics();
    let mut out = Vec::new();
    for s in vertex_subtasks(o.vertices(), v, &metrics.subtasks) {
        let i = s.subtask_index;
        out.push(json!({
            "id": format!("{i}.currentInputWatermark"),
            "value": s.input_watermark.unwrap_or(NO_WATERMARK).to_string(),
        }));
        out.push(json!({
            "id": format!("{i}.currentOutputWatermark"),
            "value": s.output_watermark.unwrap_or(NO_WATERMARK).to_string(),
        }));
    }
    ok(Value::Array(out))
}

/// Flink's `?get=a,b` parameter of the metrics endpoints.
#[derive(serde::Deserialize)]
struct MetricsQuery {
    get: Option<String>,
}

/// One subtask's metrics by Flink's names: the counters and watermarks, then every gauge
/// its source and operators publish (a Kafka source's offsets and lag per partition).
fn subtask_metric_values(s: &actorflow_runtime::SubtaskMetricsSnapshot) -> Vec<(String, String)> {
    let mut out = vec![
        ("numRecordsIn".to_string(), s.records_in.to_string()),
        ("numRecordsOut".to_string(), s.records_out.to_string()),
        (
            "currentInputWatermark".to_string(),
            s.input_watermark.unwrap_or(NO_WATERMARK).to_string(),
        ),
        (
            "currentOutputWatermark".to_string(),
            s.output_watermark.unwrap_or(NO_WATERMARK).to_string(),
        ),
        (
            "numLateRecordsDropped".to_string(),
            s.late_records_dropped.to_string(),
        ),
    ];
    out.extend(s.gauges.iter().map(|(k, v)| (k.clone(), v.to_string())));
    out
}

/// Flink's answer: without `get`, the ids (`[{"id"}]`); with `get=a,b`, those ids and their
/// values (`[{"id", "value"}]`), unknown ids left out.
fn metrics_answer(all: Vec<(String, String)>, query: &MetricsQuery) -> HttpResponse {
    match &query.get {
        None => ok(Value::Array(
            all.into_iter().map(|(id, _)| json!({ "id": id })).collect(),
        )),
        Some(wanted) => {
            let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
            ok(Value::Array(
                all.into_iter()
                    .filter(|(id, _)| wanted.contains(&id.as_str()))
                    .map(|(id, value)| json!({ "id": id, "value": value }))
                    .collect(),
            ))
        }
    }
}

/// `GET /jobs/{jid}/vertices/{vid}/metrics[?get=…]`: every subtask's metrics, ids prefixed
/// with the subtask index (`0.numRecordsOut`), as Flink.
async fn vertex_metrics(
    state: State,
    path: web::Path<(String, String)>,
    query: web::Query<MetricsQuery>,
) -> HttpResponse {
    let (jid, vid) = path.into_inner();
    let job = tri!(find_job(&state, &jid));
    let v = tri!(find_vertex(&job, &vid));
    let metrics = job.control.metrics();
    let mut all = Vec::new();
    for s in vertex_subtasks(job.control.observer().vertices(), v, &metrics.subtasks) {
        let i = s.subtask_index;
        all.extend(
            subtask_metric_values(s)
                .into_iter()
                .map(|(k, v)| (format!("{i}.{k}"), v)),
        );
    }
    metrics_answer(all, &query)
}

/// `GET /jobs/{jid}/vertices/{vid}/subtasks/{index}/metrics[?get=…]`: one subtask's.
async fn subtask_metrics(
    state: State,
    path: web::Path<(String, String, String)>,
    query: web::Query<MetricsQuery>,
) -> HttpResponse {
    let (jid, vid, index) = path.into_inner();
    let job = tri!(find_job(&state, &jid));
    let v = tri!(find_vertex(&job, &vid));
    let Ok(index) = index.parse::<usize>() else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("invalid subtask index {index:?}"),
        );
    };
    let metrics = job.control.metrics();
    let subs = vertex_subtasks(job.control.observer().vertices(), v, &metrics.subtasks);
    let Some(s) = subs.iter().find(|s| s.subtask_index == index) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("subtask {index} not found in vertex {vid}"),
        );
    };
    metrics_answer(subtask_metric_values(s), &query)
}

/// Why each subtask's watermark is where it is: every input channel's watermark, which
/// channel holds the minimum, which are idle, and a hint.
async fn explain(state: State, path: web::Path<(String, String)>) -> HttpResponse {
    let (jid, vid) = path.into_inner();
    let job = tri!(find_job(&state, &jid));
    let v = tri!(find_vertex(&job, &vid));
    let o = job.control.observer();
    let metrics = job.control.metrics();
    let now = wall_ms() as i64;
    let name_of = |vertex: usize| {
        o.vertices()
            .get(vertex)
            .map_or(String::new(), |u| u.name.clone())
    };
    let id_of = |vertex: usize| {
        o.vertices()
            .get(vertex)
            .map_or(String::new(), |u| u.id.clone())
    };
    let subtasks: Vec<Value> = vertex_subtasks(o.vertices(), v, &metrics.subtasks)
        .iter()
        .map(|s| {
            let chans = &s.input_channels;
            let active: Vec<usize> = (0..chans.len())
                .filter(|&k| !chans[k].idle && !chans[k].ended)
                .collect();
            let min = active
                .iter()
                .map(|&k| chans[k].watermark.unwrap_or(i64::MIN))
                .min();
            let holding: Vec<usize> = match min {
                Some(m) => active
                    .iter()
                    .copied()
                    .filter(|&k| chans[k].watermark.unwrap_or(i64::MIN) == m)
                    .collect(),
                None => Vec::new(),
            };
            let max = active.iter().filter_map(|&k| chans[k].watermark).max();
            let describe = |k: usize| {
                format!(
                    "input channel {k} of subtask {} (from {} subtask {})",
                    s.subtask_index,
                    name_of(chans[k].source.vertex),
                    chans[k].source.subtask
                )
            };
            let silent: Vec<usize> = active
                .iter()
                .copied()
                .filter(|&k| chans[k].watermark.is_none())
                .collect();
            let hint = if chans.is_empty() {
                if s.output_watermark.is_none() && s.status == actorflow_runtime::SubtaskStatus::Running {
                    Some(format!(
                        "source subtask {} has emitted no watermark yet: it has read no data (an empty partition?) or has no watermark strategy. A source subtask without data holds back event time everywhere downstream: consider `WatermarkStrategy::with_idleness`",
                        s.subtask_index
                    ))
                } else {
                    None
                }
            } else if let Some(&k) = silent.first() {
                Some(format!(
                    "{} has received no watermark: its upstream sent no data or no watermark yet, and holds the minimum. If that upstream has no data (an empty partition), consider `WatermarkStrategy::with_idleness` on its source",
                    describe(k)
                ))
            } else if active.is_empty() {
                Some("every input channel is idle or ended: the subtask is idle and forwards the maximum of its inputs".to_string())
            } else if let (Some(m), Some(x), Some(&k)) = (min, max, holding.first()) {
                (x > m).then(|| format!(
                    "{} holds the minimum at {m}; the slowest other channel is {} ms ahead",
                    describe(k),
                    active.iter().filter_map(|&j| chans[j].watermark).filter(|&w| w > m).min().map_or(0, |w| w - m)
                ))
            } else {
                None
            };
            let channels: Vec<Value> = chans
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    json!({
                        "channel": k,
                        "from_vertex_id": id_of(c.source.vertex),
                        "from_vertex_name": name_of(c.source.vertex),
                        "from_subtask": c.source.subtask,
                        "watermark": c.watermark,
                        "idle": c.idle,
                        "ended": c.ended,
                        "holds_minimum": holding.contains(&k),
                    })
                })
                .collect();
            let wm = if chans.is_empty() { s.output_watermark } else { s.input_watermark };
            json!({
                "subtask": s.subtask_index,
                "status": format!("{:?}", s.status).to_ascii_uppercase(),
                "input_watermark": s.input_watermark,
                "output_watermark": s.output_watermark,
                "lag_ms": wm.filter(|&w| w > i64::MIN && w < i64::MAX).map(|w| now.saturating_sub(w)),
                "channels": channels,
                "holding_channels": holding,
                "idle_channels": (0..chans.len()).filter(|&k| chans[k].idle).collect::<Vec<_>>(),
                "hint": hint,
            })
        })
        .collect();
    ok(json!({
        "id": v.id,
        "name": v.name,
        "now": now,
        "subtasks": subtasks,
    }))
}
