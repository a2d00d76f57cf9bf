//! `GET /metrics`: every job's metrics in the Prometheus / OpenMetrics text format, built with
//! `prometheus-client` at scrape time from the same samples the REST API shows. Names start
//! with `actorflow_`; per-subtask series carry `job`, `job_id`, `vertex` and `subtask` labels,
//! per-job series `job` and `job_id`. `docs/web.md` maps each to the Flink metric it mirrors.

use super::WebState;
use super::json::vertex_subtasks;
use actix_web::{HttpResponse, web};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubtaskLabels {
    job: String,
    job_id: String,
    vertex: String,
    subtask: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GaugeLabels {
    job: String,
    job_id: String,
    vertex: String,
    subtask: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
    job_id: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

struct Families {
    records_in: Family<SubtaskLabels, Counter>,
    records_out: Family<SubtaskLabels, Counter>,
    records_in_rate: Family<SubtaskLabels, FloatGauge>,
    records_out_rate: Family<SubtaskLabels, FloatGauge>,
    busy: Family<SubtaskLabels, FloatGauge>,
    backpressured: Family<SubtaskLabels, FloatGauge>,
    idle: Family<SubtaskLabels, FloatGauge>,
    input_fill: Family<SubtaskLabels, FloatGauge>,
    output_fill: Family<SubtaskLabels, FloatGauge>,
    input_watermark: Family<SubtaskLabels, Gauge>,
    output_watermark: Family<SubtaskLabels, Gauge>,
    late: Family<SubtaskLabels, Counter>,
    keys: Family<SubtaskLabels, Gauge>,
    gauges: Family<GaugeLabels, Gauge>,
    uptime: Family<JobLabels, Gauge>,
    restarts: Family<JobLabels, Counter>,
    running: Family<JobLabels, Gauge>,
    completed: Family<JobLabels, Counter>,
    failed: Family<JobLabels, Counter>,
    in_progress: Family<JobLabels, Gauge>,
    last_duration: Family<JobLabels, Gauge>,
    last_size: Family<JobLabels, Gauge>,
}

fn registry() -> (Registry, Families) {
    let f = Families {
        records_in: Family::default(),
        records_out: Family::default(),
        records_in_rate: Family::default(),
        records_out_rate: Family::default(),
        busy: Family::default(),
        backpressured: Family::default(),
        idle: Family::default(),
        input_fill: Family::default(),
        output_fill: Family::default(),
        input_watermark: Family::default(),
        output_watermark: Family::default(),
        late: Family::default(),
        keys: Family::default(),
        gauges: Family::default(),
        uptime: Family::default(),
        restarts: Family::default(),
        running: Family::default(),
        completed: Family::default(),
        failed: Family::default(),
        in_progress: Family::default(),
        last_duration: Family::default(),
        last_size: Family::default(),
    };
    let mut r = Registry::with_prefix("actorflow");
    r.register(
        "records_in",
        "Records a subtask took from its input lanes (Flink numRecordsIn)",
        f.records_in.clone(),
    );
    r.register(
        "records_out",
        "Records a subtask sent downstream (Flink numRecordsOut)",
        f.records_out.clone(),
    );
    r.register(
        "records_in_per_second",
        "Records in per second over the last sample (Flink numRecordsInPerSecond)",
        f.records_in_rate.clone(),
    );
    r.register(
        "records_out_per_second",
        "Records out per second over the last sample (Flink numRecordsOutPerSecond)",
        f.records_out_rate.clone(),
    );
    r.register(
        "busy_time_ms_per_second",
        "Busy time per second (Flink busyTimeMsPerSecond)",
        f.busy.clone(),
    );
    r.register(
        "backpressured_time_ms_per_second",
        "Time waiting for room downstream per second (Flink backPressuredTimeMsPerSecond)",
        f.backpressured.clone(),
    );
    r.register(
        "idle_time_ms_per_second",
        "Time waiting for input per second (Flink idleTimeMsPerSecond)",
        f.idle.clone(),
    );
    r.register(
        "input_lane_fill",
        "Fill of the fullest input lane, 0 to 1 (Flink inPoolUsage)",
        f.input_fill.clone(),
    );
    r.register(
        "output_lane_fill",
        "Fill of the fullest output lane, 0 to 1 (Flink outPoolUsage)",
        f.output_fill.clone(),
    );
    r.register(
        "current_input_watermark",
        "Combined input watermark, ms; absent before the first (Flink currentInputWatermark)",
        f.input_watermark.clone(),
    );
    r.register("current_output_watermark", "Newest watermark sent downstream, ms; absent before the first (Flink currentOutputWatermark)", f.output_watermark.clone());
    r.register(
        "late_records_dropped",
        "Records dropped as too late by windows (Flink numLateRecordsDropped)",
        f.late.clone(),
    );
    r.register(
        "keyed_state_keys",
        "Keys holding keyed state in the subtask's windows, keyed process functions and rolling reduces, as of its last input batch; absent without keyed state",
        f.keys.clone(),
    );
    r.register(
        "operator_gauge",
        "A gauge a source or operator publishes, by Flink's metric name in the label `name` (a Kafka source's KafkaSourceReader.topic.T.partition.P.currentOffset, .committedOffset and .lag, pendingRecords)",
        f.gauges.clone(),
    );
    r.register(
        "job_uptime_ms",
        "Time since the job was submitted, ms (Flink uptime)",
        f.uptime.clone(),
    );
    r.register(
        "job_restarts",
        "Restarts of any region (Flink numRestarts)",
        f.restarts.clone(),
    );
    r.register(
        "job_running",
        "1 while the job is not in a terminal status",
        f.running.clone(),
    );
    r.register(
        "checkpoints_completed",
        "Completed checkpoints and savepoints (Flink numberOfCompletedCheckpoints)",
        f.completed.clone(),
    );
    r.register(
        "checkpoints_failed",
        "Failed checkpoints (Flink numberOfFailedCheckpoints)",
        f.failed.clone(),
    );
    r.register(
        "checkpoints_in_progress",
        "Checkpoints in progress (Flink numberOfInProgressCheckpoints)",
        f.in_progress.clone(),
    );
    r.register(
        "last_checkpoint_duration_ms",
        "End-to-end duration of the newest completed checkpoint (Flink lastCheckpointDuration)",
        f.last_duration.clone(),
    );
    r.register(
        "last_checkpoint_size_bytes",
        "Full size of the newest completed checkpoint (Flink lastCheckpointSize)",
        f.last_size.clone(),
    );
    (r, f)
}

fn max_or_zero(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max)
}

/// The text of `GET /metrics`.
pub(crate) fn render(state: &WebState) -> Result<String, std::fmt::Error> {
    let (registry, f) = registry();
    for job in state.jobs() {
        let o = job.control.observer();
        let (metrics, rates) = job.sampled();
        let jl = JobLabels {
            job: o.name().to_string(),
            job_id: o.id().to_string(),
        };
        for v in o.vertices() {
            let subs = vertex_subtasks(o.vertices(), v, &metrics.subtasks);
            let subrates = vertex_subtasks(o.vertices(), v, &rates);
            for (i, s) in subs.iter().enumerate() {
                let l = SubtaskLabels {
                    job: jl.job.clone(),
                    job_id: jl.job_id.clone(),
                    vertex: v.name.clone(),
                    subtask: s.subtask_index.to_string(),
                };
                f.records_in.get_or_create(&l).inc_by(s.records_in);
                f.records_out.get_or_create(&l).inc_by(s.records_out);
                f.late.get_or_create(&l).inc_by(s.late_records_dropped);
                if let Some(r) = subrates.get(i) {
                    f.records_in_rate
                        .get_or_create(&l)
                        .set(r.records_in_per_sec);
                    f.records_out_rate
                        .get_or_create(&l)
                        .set(r.records_out_per_sec);
                    f.busy.get_or_create(&l).set(r.busy_ms_per_sec);
                    f.backpressured
                        .get_or_create(&l)
                        .set(r.backpressured_ms_per_sec);
                    f.idle.get_or_create(&l).set(r.idle_ms_per_sec);
                }
                f.input_fill
                    .get_or_create(&l)
                    .set(max_or_zero(s.input_lanes.iter().map(|x| x.ratio())));
                f.output_fill
                    .get_or_create(&l)
                    .set(max_or_zero(s.output_lanes.iter().map(|x| x.fill.ratio())));
                if let Some(k) = s.keyed_state_keys {
                    f.keys
                        .get_or_create(&l)
                        .set(i64::try_from(k).unwrap_or(i64::MAX));
                }
                if let Some(w) = s.input_watermark {
                    f.input_watermark.get_or_create(&l).set(w);
                }
                if let Some(w) = s.output_watermark {
                    f.output_watermark.get_or_create(&l).set(w);
                }
                for (name, value) in &s.gauges {
                    let g = GaugeLabels {
                        job: l.job.clone(),
                        job_id: l.job_id.clone(),
                        vertex: l.vertex.clone(),
                        subtask: l.subtask.clone(),
                        name: name.clone(),
                    };
                    f.gauges.get_or_create(&g).set(*value);
                }
            }
        }
        let end = o
            .end_ms()
            .unwrap_or_else(actorflow_runtime::runtime::observer::wall_ms);
        f.uptime
            .get_or_create(&jl)
            .set(i64::try_from(end.saturating_sub(o.start_ms())).unwrap_or(i64::MAX));
        f.restarts
            .get_or_create(&jl)
            .inc_by(u64::from(metrics.restarts));
        f.running
            .get_or_create(&jl)
            .set(i64::from(!o.status().is_terminal()));
        if o.checkpoint_config().is_some() {
            let c = o.checkpoints();
            f.completed.get_or_create(&jl).inc_by(c.completed);
            f.failed.get_or_create(&jl).inc_by(c.failed);
            f.in_progress
                .get_or_create(&jl)
                .set(i64::try_from(c.in_progress).unwrap_or(i64::MAX));
            if let Some(last) = &c.latest_completed {
                let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                f.last_duration
                    .get_or_create(&jl)
                    .set(g(last.end_to_end_duration_ms));
                f.last_size.get_or_create(&jl).set(g(last.state_size));
            }
        }
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

pub(super) async fn metrics(state: web::Data<WebState>) -> HttpResponse {
    match render(&state) {
        Ok(text) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text),
        Err(e) => super::rest::error(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the metrics: {e}"),
        ),
    }
}
