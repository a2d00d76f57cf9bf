//! The JSON documents of the REST API, with Flink's field names where Flink has the field.

use super::JobEntry;
use actorflow_runtime::CheckpointKind;
use actorflow_runtime::runtime::metrics::{
    JobMetricsSnapshot, RecoveryAction, SubtaskMetricsSnapshot, SubtaskRates, SubtaskStatus,
};
use actorflow_runtime::runtime::observer::{
    CheckpointStats, CheckpointStatus, JobObserver, JobStatus, Summary, VertexInfo, wall_ms,
};
use serde_json::{Value, json};

/// Flink's value for "no watermark yet" (`Long.MIN_VALUE`).
pub(crate) const NO_WATERMARK: i64 = i64::MIN;

/// The subtasks of `vertex` in a metrics snapshot (snapshots list subtasks by vertex, then
/// index, in plan order).
pub(crate) fn vertex_subtasks<'a, T>(
    vertices: &[VertexInfo],
    vertex: &VertexInfo,
    all: &'a [T],
) -> &'a [T] {
    let start: usize = vertices
        .iter()
        .take_while(|v| v.index != vertex.index)
        .map(|v| v.parallelism as usize)
        .sum();
    let end = (start + vertex.parallelism as usize).min(all.len());
    all.get(start.min(end)..end).unwrap_or(&[])
}

fn subtask_status(s: SubtaskStatus) -> &'static str {
    match s {
        SubtaskStatus::Created => "CREATED",
        SubtaskStatus::Running => "RUNNING",
        SubtaskStatus::Finished => "FINISHED",
        SubtaskStatus::Cancelled => "CANCELED",
        SubtaskStatus::Failed => "FAILED",
    }
}

/// A vertex's status from its subtasks' (Flink's aggregation: any failed, else any running...).
pub(crate) fn vertex_status(subtasks: &[SubtaskMetricsSnapshot]) -> &'static str {
    let any = |st: SubtaskStatus| subtasks.iter().any(|s| s.status == st);
    if any(SubtaskStatus::Failed) {
        "FAILED"
    } else if any(SubtaskStatus::Running) {
        "RUNNING"
    } else if any(SubtaskStatus::Created) {
        "CREATED"
    } else if any(SubtaskStatus::Cancelled) {
        "CANCELED"
    } else if subtasks.is_empty() {
        "CREATED"
    } else {
        "FINISHED"
    }
}

fn task_counts(subtasks: &[SubtaskMetricsSnapshot]) -> Value {
    let count = |st: SubtaskStatus| subtasks.iter().filter(|s| s.status == st).count();
    json!({
        "CREATED": count(SubtaskStatus::Created),
        "SCHEDULED": 0,
        "DEPLOYING": 0,
        "RUNNING": count(SubtaskStatus::Running),
        "FINISHED": count(SubtaskStatus::Finished),
        "CANCELING": 0,
        "CANCELED": count(SubtaskStatus::Cancelled),
        "FAILED": count(SubtaskStatus::Failed),
        "RECONCILING": 0,
        "INITIALIZING": 0,
    })
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Flink's `metrics` object of a vertex or subtask (`read-records`, `write-records`, ...).
fn io_metrics(subtasks: &[SubtaskMetricsSnapshot]) -> Value {
    let sum = |f: fn(&SubtaskMetricsSnapshot) -> u64| subtasks.iter().map(f).sum::<u64>();
    let read = sum(|s| s.records_in);
    let write = sum(|s| s.records_out);
    let done = !subtasks.is_empty()
        && subtasks
            .iter()
            .all(|s| s.status != SubtaskStatus::Running && s.status != SubtaskStatus::Created);
    json!({
        "read-bytes": 0,
        "read-bytes-complete": done,
        "write-bytes": 0,
        "write-bytes-complete": done,
        "read-records": read,
        "read-records-complete": done,
        "write-records": write,
        "write-records-complete": done,
        "accumulated-backpressured-time": sum(|s| ms(s.backpressured)),
        "accumulated-idle-time": sum(|s| ms(s.idle)),
        "accumulated-busy-time": sum(|s| ms(s.busy)),
    })
}

/// The job's start, end and duration as Flink shows them (`end-time` -1 while running).
fn times(o: &JobObserver) -> (u64, i64, u64) {
    let start = o.start_ms();
    let end = o.end_ms();
    let duration = end.unwrap_or_else(wall_ms).saturating_sub(start);
    (start, end.map_or(-1, |e| e as i64), duration)
}

/// One entry of `GET /jobs/overview`.
pub(crate) fn job_overview(job: &JobEntry, metrics: &JobMetricsSnapshot) -> Value {
    let o = job.control.observer();
    let (start, end, duration) = times(o);
    let last = o.status_history().last().map_or(start, |s| s.1);
    json!({
        "jid": o.id().to_string(),
        "name": o.name(),
        "state": o.status().as_str(),
        "start-time": start,
        "end-time": end,
        "duration": duration,
        "last-modification": last,
        "tasks": task_counts(&metrics.subtasks),
    })
}

/// `GET /jobs/{id}`.
pub(crate) fn job_details(job: &JobEntry, metrics: &JobMetricsSnapshot) -> Value {
    let o = job.control.observer();
    let (start, end, duration) = times(o);
    let mut timestamps = serde_json::Map::new();
    for st in JobStatus::ALL {
        timestamps.insert(st.as_str().into(), json!(0));
    }
    for (st, at) in o.status_history() {
        timestamps.insert(st.as_str().into(), json!(at));
    }
    let vertices: Vec<Value> = o
        .vertices()
        .iter()
        .map(|v| {
            let subs = vertex_subtasks(o.vertices(), v, &metrics.subtasks);
            json!({
                "id": v.id,
                "name": v.name,
                "maxParallelism": v.max_parallelism,
                "parallelism": v.parallelism,
                "status": vertex_status(subs),
                "start-time": start,
                "end-time": end,
                "duration": duration,
                "tasks": task_counts(subs),
                "metrics": io_metrics(subs),
            })
        })
        .collect();
    json!({
        "jid": o.id().to_string(),
        "name": o.name(),
        "isStoppable": false,
        "state": o.status().as_str(),
        "job-type": "STREAMING",
        "start-time": start,
        "end-time": end,
        "duration": duration,
        "maxParallelism": o.vertices().iter().map(|v| v.max_parallelism).max().unwrap_or(0),
        "now": wall_ms(),
        "timestamps": timestamps,
        "vertices": vertices,
        "status-counts": task_counts(&metrics.subtasks),
        "plan": plan(job)["plan"],
        "restarts": metrics.restarts,
        "status-history": o.status_history().into_iter()
            .map(|(st, at)| json!({"status": st.as_str(), "timestamp": at}))
            .collect::<Vec<_>>(),
    })
}

/// `GET /jobs/{id}/plan`.
pub(crate) fn plan(job: &JobEntry) -> Value {
    let o = job.control.observer();
    let nodes: Vec<Value> = o
        .vertices()
        .iter()
        .map(|v| {
            let inputs: Vec<Value> = v
                .inputs
                .iter()
                .enumerate()
                .map(|(num, e)| {
                    json!({
                        "num": num,
                        "id": o.vertices().get(e.from).map(|u| u.id.clone()).unwrap_or_default(),
                        "ship_strategy": e.ship_strategy,
                        "exchange": "pipelined_bounded",
                        "input": e.input,
                    })
                })
                .collect();
            json!({
                "id": v.id,
                "parallelism": v.parallelism,
                "operator": "",
                "operator_strategy": "",
                "description": v.name,
                "operators": v.operators,
                "inputs": inputs,
                "optimizer_properties": {},
            })
        })
        .collect();
    json!({
        "plan": {
            "jid": o.id().to_string(),
            "name": o.name(),
            "type": "STREAMING",
            "nodes": nodes,
        }
    })
}

/// What the supervisor did, as JSON: `{"type": "REGION_RESTARTED", "attempt", "delay_ms",
/// "from_checkpoint"}`, `{"type": "SAME_INCIDENT"}` or `{"type": "JOB_FAILED", "reason"}`.
pub(crate) fn action(action: &RecoveryAction) -> Value {
    match action {
        RecoveryAction::RegionRestarted {
            attempt,
            delay_ms,
            from_checkpoint,
        } => json!({
            "type": "REGION_RESTARTED",
            "attempt": attempt,
            "delay_ms": delay_ms,
            "from_checkpoint": from_checkpoint,
        }),
        RecoveryAction::SameIncident => json!({"type": "SAME_INCIDENT"}),
        RecoveryAction::JobFailed { reason } => json!({"type": "JOB_FAILED", "reason": reason}),
    }
}

/// `GET /jobs/{id}/exceptions`: Flink's exception history, plus what the supervisor did.
pub(crate) fn exceptions(metrics: &JobMetricsSnapshot, vertices: &[VertexInfo]) -> Value {
    let entries: Vec<Value> = metrics
        .exceptions
        .iter()
        .rev()
        .map(|e| {
            let action = action(&e.action);
            json!({
                "exceptionName": "SubtaskFailure",
                "stacktrace": e.cause,
                "timestamp": e.timestamp_ms,
                "taskName": format!("{} ({}/{})", e.vertex, e.subtask_index + 1,
                    vertices.iter().find(|v| v.name == e.vertex).map_or(0, |v| v.parallelism)),
                "operatorName": e.operator,
                "subtaskIndex": e.subtask_index,
                "region": e.region,
                "endpoint": null,
                "taskManagerId": null,
                "failureLabels": {},
                "concurrentExceptions": [],
                "action": action,
            })
        })
        .collect();
    let root = metrics.exceptions.last();
    json!({
        "root-exception": root.map(|e| e.cause.clone()),
        "timestamp": root.map(|e| e.timestamp_ms),
        "all-exceptions": [],
        "truncated": false,
        "exceptionHistory": { "entries": entries, "truncated": false },
    })
}

/// One subtask of `GET /jobs/{id}/vertices/{vid}`, with our extra fields (rates, lanes,
/// watermarks).
pub(crate) fn subtask(
    s: &SubtaskMetricsSnapshot,
    rate: Option<&SubtaskRates>,
    start: u64,
    restarts: u32,
) -> Value {
    let lanes = |fills: Vec<f64>| json!(fills);
    json!({
        "subtask": s.subtask_index,
        "status": subtask_status(s.status),
        "attempt": restarts,
        "endpoint": "localhost",
        "start-time": start,
        "end-time": -1,
        "duration": wall_ms().saturating_sub(start),
        "taskmanager-id": "local",
        "metrics": io_metrics(std::slice::from_ref(s)),
        "records-in-per-second": rate.map_or(0.0, |r| r.records_in_per_sec),
        "records-out-per-second": rate.map_or(0.0, |r| r.records_out_per_sec),
        "busyTimeMsPerSecond": rate.map_or(0.0, |r| r.busy_ms_per_sec),
        "backPressuredTimeMsPerSecond": rate.map_or(0.0, |r| r.backpressured_ms_per_sec),
        "idleTimeMsPerSecond": rate.map_or(0.0, |r| r.idle_ms_per_sec),
        "input-lane-fill": lanes(s.input_lanes.iter().map(|l| l.ratio()).collect()),
        "output-lane-fill": lanes(s.output_lanes.iter().map(|l| l.fill.ratio()).collect()),
        "currentInputWatermark": s.input_watermark.unwrap_or(NO_WATERMARK),
        "currentOutputWatermark": s.output_watermark.unwrap_or(NO_WATERMARK),
        "numLateRecordsDropped": s.late_records_dropped,
        "keyed-state-keys": s.keyed_state_keys,
        "gauges": s
            .gauges
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(*v)))
            .collect::<serde_json::Map<String, Value>>(),
    })
}

/// Flink's backpressure level of a ratio: ok up to 10 %, low up to 50 %, high above.
pub(crate) fn backpressure_level(ratio: f64) -> &'static str {
    if ratio <= 0.10 {
        "ok"
    } else if ratio <= 0.5 {
        "low"
    } else {
        "high"
    }
}

fn summary(s: &Summary) -> Value {
    json!({
        "min": s.min, "max": s.max, "avg": s.avg,
        "p50": s.p50, "p90": s.p90, "p95": s.p95, "p99": s.p99, "p999": s.p999,
        "count": s.count,
    })
}

fn checkpoint_type(c: &CheckpointStats) -> &'static str {
    match (c.kind, c.unaligned) {
        (CheckpointKind::Savepoint, _) => "SAVEPOINT",
        (_, true) => "UNALIGNED_CHECKPOINT",
        _ => "CHECKPOINT",
    }
}

/// Per vertex statistics of one checkpoint (Flink's `tasks` object).
fn checkpoint_tasks(c: &CheckpointStats, vertices: &[VertexInfo]) -> Value {
    let mut tasks = serde_json::Map::new();
    for v in vertices {
        let acks: Vec<_> = c.subtasks.iter().filter(|s| s.vertex == v.index).collect();
        let latest = acks.iter().map(|a| a.ack_timestamp_ms).max().unwrap_or(0);
        tasks.insert(
            v.id.clone(),
            json!({
                "id": v.id,
                "status": c.status.as_str(),
                "latest_ack_timestamp": latest,
                "checkpointed_size": acks.iter().map(|a| a.state_size).sum::<u64>(),
                "state_size": acks.iter().map(|a| a.state_size).sum::<u64>(),
                "end_to_end_duration": latest.saturating_sub(c.trigger_timestamp_ms),
                "alignment_buffered": 0,
                "processed_data": 0,
                "persisted_data": acks.iter().map(|a| a.in_flight_bytes).sum::<u64>(),
                "num_subtasks": v.parallelism,
                "num_acknowledged_subtasks": acks.len(),
            }),
        );
    }
    Value::Object(tasks)
}

/// One checkpoint as Flink's history lists it, with its `tasks`.
pub(crate) fn checkpoint(c: &CheckpointStats, vertices: &[VertexInfo], location: &str) -> Value {
    let class = match c.status {
        CheckpointStatus::Completed => ".CompletedCheckpointStatistics",
        CheckpointStatus::Failed => ".FailedCheckpointStatistics",
        CheckpointStatus::InProgress => ".PendingCheckpointStatistics",
    };
    json!({
        "className": class,
        "id": c.id,
        "status": c.status.as_str(),
        "is_savepoint": c.kind == CheckpointKind::Savepoint,
        "savepointFormat": if c.kind == CheckpointKind::Savepoint { json!("CANONICAL") } else { Value::Null },
        "is_final": c.is_final,
        "trigger_timestamp": c.trigger_timestamp_ms,
        "latest_ack_timestamp": c.latest_ack_timestamp_ms,
        "checkpointed_size": c.checkpointed_size,
        "state_size": c.state_size,
        "end_to_end_duration": c.end_to_end_duration_ms,
        "alignment_buffered": 0,
        "alignment_duration": c.alignment_ms,
        "processed_data": 0,
        "persisted_data": c.in_flight_bytes,
        "num_subtasks": c.num_subtasks,
        "num_acknowledged_subtasks": c.num_acknowledged_subtasks,
        "checkpoint_type": checkpoint_type(c),
        "tasks": checkpoint_tasks(c, vertices),
        "external_path": if c.status == CheckpointStatus::Completed { json!(format!("{location}#{}", c.id)) } else { Value::Null },
        "discarded": false,
        "failure_timestamp": if c.status == CheckpointStatus::Failed { json!(c.trigger_timestamp_ms + c.end_to_end_duration_ms) } else { Value::Null },
        "failure_message": c.failure_message,
    })
}

/// `GET /jobs/{id}/checkpoints`.
pub(crate) fn checkpoints(o: &JobObserver) -> Value {
    let v = o.checkpoints();
    let location = o.checkpoint_config().map_or("", |c| c.store.as_str());
    let one = |c: &Option<CheckpointStats>| {
        c.as_ref()
            .map_or(Value::Null, |c| checkpoint(c, o.vertices(), location))
    };
    json!({
        "counts": {
            "restored": v.restored,
            "total": v.triggered,
            "in_progress": v.in_progress,
            "completed": v.completed,
            "failed": v.failed,
        },
        "summary": {
            "checkpointed_size": summary(&v.checkpointed_size),
            "state_size": summary(&v.state_size),
            "end_to_end_duration": summary(&v.end_to_end_duration),
            "alignment_buffered": summary(&Summary::default()),
            "alignment_duration": summary(&v.alignment),
            "processed_data": summary(&Summary::default()),
            "persisted_data": summary(&v.in_flight_bytes),
        },
        "latest": {
            "completed": one(&v.latest_completed),
            "savepoint": one(&v.latest_savepoint),
            "failed": one(&v.latest_failed),
            "restored": v.latest_restored.map(|r| json!({
                "id": r.id,
                "restore_timestamp": r.restore_timestamp_ms,
                "is_savepoint": false,
                "external_path": r.id.map(|id| format!("{location}#{id}")),
            })),
        },
        "history": v.history.iter().map(|c| checkpoint(c, o.vertices(), location)).collect::<Vec<_>>(),
    })
}

/// `GET /jobs/{id}/checkpoints/details/{cid}/subtasks/{vid}`.
pub(crate) fn checkpoint_subtasks(c: &CheckpointStats, v: &VertexInfo) -> Value {
    let subtasks: Vec<Value> = (0..v.parallelism as usize)
        .map(|i| {
            match c
                .subtasks
                .iter()
                .find(|s| s.vertex == v.index && s.subtask == i)
            {
                Some(a) => json!({
                    "index": i,
                    "status": "completed",
                    "ack_timestamp": a.ack_timestamp_ms,
                    "end_to_end_duration": a.ack_timestamp_ms.saturating_sub(c.trigger_timestamp_ms),
                    "state_size": a.state_size,
                    "checkpointed_size": a.state_size,
                    "checkpoint": { "sync": a.sync_ms, "async": a.async_ms },
                    "alignment": { "buffered": 0, "processed": 0, "persisted": a.in_flight_bytes, "duration": a.alignment_ms },
                    "start_delay": 0,
                    "unaligned_checkpoint": a.unaligned,
                    "aborted": false,
                }),
                None => json!({"index": i, "status": "pending_or_failed"}),
            }
        })
        .collect();
    json!({
        "id": v.id,
        "status": c.status.as_str(),
        "num_subtasks": v.parallelism,
        "num_acknowledged_subtasks": c.subtasks.iter().filter(|s| s.vertex == v.index).count(),
        "subtasks": subtasks,
    })
}

/// A JSON error body: Flink's `{"errors": [...]}`.
pub(crate) fn errors(message: &str) -> Value {
    json!({ "errors": [message] })
}
