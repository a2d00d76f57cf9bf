//! The REST API, the Prometheus endpoint and the event stream, against real jobs (cargo
//! feature `web`).
#![cfg(feature = "web")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod http;

use actorflow::GeneratorSource;
use actorflow::checkpoint::RestoreFrom;
use actorflow::observer::{JobStatus, JobUpdateKind};
use actorflow::prelude::*;
use actorflow::snapshot::{MemoryStore, SnapshotStore};
use actorflow::web::{WebConfig, WebServer};
use actorflow_runtime::{CheckpointId, JobHandle};
use http::{Events, get, request};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn loopback() -> WebConfig {
    WebConfig::new("127.0.0.1:0".parse().unwrap()).token("test-token")
}

const AUTH: (&str, &str) = ("Authorization", "Bearer test-token");

/// A keyed job that runs for about `records / rate` seconds: generator (2 subtasks) -> map
/// -> keyed sum (2) -> collect.
fn job(
    env: &StreamExecutionEnvironment,
    records: u64,
    rate: f64,
) -> actorflow::sinks::Collected<(u64, u64)> {
    env.set_parallelism(2);
    env.from_generator(GeneratorSource::new(records, |i| i).with_rate_limit(rate))
        .map(|i: u64| (i % 10, 1u64))
        .name("pairs")
        .key_by(|p: &(u64, u64)| p.0)
        .sum(|p| &mut p.1)
        .name("counts")
        .collect()
}

/// Waits (event-driven, with a deadline) until `f` accepts an update of the job.
async fn wait_for(handle: &JobHandle, what: &str, f: impl Fn(&JobUpdateKind) -> bool) {
    let mut rx = handle.observer().subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(u)) if f(&u.kind) => return,
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("waiting for {what}: {e}"),
            Err(_) => panic!("no {what} within 60 s"),
        }
    }
}

fn completed_checkpoint(k: &JobUpdateKind) -> bool {
    matches!(
        k,
        JobUpdateKind::Event(actorflow::checkpoint::JobEvent::CheckpointCompleted { .. })
    )
}

fn vertex_ids(details: &Value) -> Vec<String> {
    details["vertices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_shows_a_running_checkpointed_job_in_flinks_shapes() {
    let env = StreamExecutionEnvironment::new();
    let web = env.enable_web(loopback()).unwrap();
    let addr = web.local_addr();
    let store: Arc<dyn SnapshotStore> = Arc::new(MemoryStore::new());
    env.enable_checkpointing(Duration::from_millis(100))
        .set_checkpoint_storage(store.clone());
    let out = job(&env, 40_000, 10_000.0);
    let handle = env.execute_async("rest job").await.unwrap();
    let jid = handle.observer().id().to_string();
    wait_for(&handle, "a completed checkpoint", completed_checkpoint).await;

    let overview = get(addr, "/overview").await;
    assert_eq!(overview.status, 200);
    assert_eq!(overview.json()["jobs-running"], 1);
    assert!(
        overview.header("access-control-allow-origin").is_none(),
        "no CORS headers"
    );

    let jobs = get(addr, "/jobs").await.json();
    assert_eq!(jobs["jobs"][0]["id"], jid.as_str());
    assert_eq!(jobs["jobs"][0]["status"], "RUNNING");
    let list = get(addr, "/jobs/overview").await.json();
    assert_eq!(list["jobs"][0]["jid"], jid.as_str());
    assert_eq!(list["jobs"][0]["name"], "rest job");
    assert_eq!(list["jobs"][0]["end-time"], -1);
    assert_eq!(list["jobs"][0]["tasks"]["RUNNING"], 4);

    let details = get(addr, &format!("/jobs/{jid}")).await.json();
    assert_eq!(details["state"], "RUNNING");
    assert_eq!(details["job-type"], "STREAMING");
    assert!(
        details["timestamps"]["RUNNING"].as_u64().unwrap()
            >= details["timestamps"]["CREATED"].as_u64().unwrap()
    );
    let vertices = details["vertices"].as_array().unwrap();
    assert_eq!(vertices.len(), 2, "{details}");
    assert!(vertices[0]["name"].as_str().unwrap().contains("pairs"));
    assert!(vertices[1]["name"].as_str().unwrap().contains("counts"));
    for v in vertices {
        assert_eq!(v["parallelism"], 2);
        assert_eq!(v["status"], "RUNNING");
        assert_eq!(v["id"].as_str().unwrap().len(), 32);
        assert!(v["metrics"]["write-records"].is_u64());
        assert!(v["metrics"]["read-records"].is_u64());
    }
    let ids = vertex_ids(&details);

    let plan = get(addr, &format!("/jobs/{jid}/plan")).await.json();
    let nodes = plan["plan"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[1]["inputs"][0]["id"], ids[0].as_str());
    assert_eq!(nodes[1]["inputs"][0]["ship_strategy"], "HASH");

    let vertex = get(addr, &format!("/jobs/{jid}/vertices/{}", ids[1]))
        .await
        .json();
    assert_eq!(vertex["id"], ids[1].as_str());
    let subtasks = vertex["subtasks"].as_array().unwrap();
    assert_eq!(subtasks.len(), 2);
    for (i, s) in subtasks.iter().enumerate() {
        assert_eq!(s["subtask"], i);
        assert_eq!(s["status"], "RUNNING");
        assert_eq!(
            s["input-lane-fill"].as_array().unwrap().len(),
            2,
            "one lane per upstream subtask"
        );
        let busy = s["busyTimeMsPerSecond"].as_f64().unwrap();
        assert!((0.0..=1000.5).contains(&busy), "{busy}");
    }
    let source = get(addr, &format!("/jobs/{jid}/vertices/{}", ids[0]))
        .await
        .json();
    assert_eq!(
        source["subtasks"][0]["output-lane-fill"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let bp = get(
        addr,
        &format!("/jobs/{jid}/vertices/{}/backpressure", ids[0]),
    )
    .await
    .json();
    assert_eq!(bp["status"], "ok");
    assert!(["ok", "low", "high"].contains(&bp["backpressureLevel"].as_str().unwrap()));
    let subs = bp["subtasks"].as_array().unwrap();
    assert_eq!(subs.len(), 2);
    for s in subs {
        for k in ["ratio", "busyRatio", "idleRatio"] {
            let r = s[k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&r), "{k}={r}");
        }
    }

    let wms = get(addr, &format!("/jobs/{jid}/vertices/{}/watermarks", ids[1]))
        .await
        .json();
    let wm_ids: Vec<&str> = wms
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        wm_ids,
        [
            "0.currentInputWatermark",
            "0.currentOutputWatermark",
            "1.currentInputWatermark",
            "1.currentOutputWatermark"
        ]
    );
    let explain = get(
        addr,
        &format!("/jobs/{jid}/vertices/{}/watermarks/explain", ids[1]),
    )
    .await
    .json();
    let first = &explain["subtasks"][0];
    assert_eq!(first["channels"].as_array().unwrap().len(), 2);
    assert_eq!(first["channels"][1]["from_vertex_id"], ids[0].as_str());
    assert_eq!(first["channels"][1]["from_subtask"], 1);

    let ck = get(addr, &format!("/jobs/{jid}/checkpoints")).await.json();
    assert!(ck["counts"]["completed"].as_u64().unwrap() >= 1, "{ck}");
    assert!(ck["counts"]["total"].as_u64().unwrap() >= ck["counts"]["completed"].as_u64().unwrap());
    let latest = &ck["latest"]["completed"];
    assert_eq!(latest["status"], "COMPLETED");
    assert_eq!(latest["checkpoint_type"], "CHECKPOINT");
    assert_eq!(latest["num_subtasks"], 4);
    assert_eq!(latest["num_acknowledged_subtasks"], 4);
    assert!(latest["state_size"].as_u64().unwrap() > 0);
    assert!(
        ck["summary"]["end_to_end_duration"]["count"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let cid = latest["id"].as_u64().unwrap();
    let detail = get(addr, &format!("/jobs/{jid}/checkpoints/details/{cid}"))
        .await
        .json();
    assert_eq!(detail["id"], cid);
    assert_eq!(
        detail["tasks"][ids[1].as_str()]["num_acknowledged_subtasks"],
        2
    );
    let sub = get(
        addr,
        &format!("/jobs/{jid}/checkpoints/details/{cid}/subtasks/{}", ids[1]),
    )
    .await
    .json();
    assert_eq!(sub["subtasks"][1]["index"], 1);
    assert_eq!(sub["subtasks"][1]["status"], "completed");
    assert!(sub["subtasks"][1]["checkpoint"]["sync"].is_u64());
    let config = get(addr, &format!("/jobs/{jid}/checkpoints/config"))
        .await
        .json();
    assert_eq!(config["mode"], "exactly_once");
    assert_eq!(config["interval"], 100);

    // A savepoint over the API, then the job runs on to its end.
    let trigger = request(
        addr,
        "POST",
        &format!("/jobs/{jid}/savepoints"),
        &[AUTH],
        "{}",
    )
    .await;
    assert_eq!(trigger.status, 202, "{}", trigger.body);
    let rid = trigger.json()["request-id"].as_str().unwrap().to_string();
    let savepoint = loop {
        let s = get(addr, &format!("/jobs/{jid}/savepoints/{rid}"))
            .await
            .json();
        if s["status"]["id"] == "COMPLETED" {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let savepoint_id = savepoint["operation"]["checkpoint-id"]
        .as_u64()
        .unwrap_or_else(|| panic!("{savepoint}"));
    assert!(
        savepoint["operation"]["location"]
            .as_str()
            .unwrap()
            .ends_with(&format!("#{savepoint_id}"))
    );
    let ck = get(addr, &format!("/jobs/{jid}/checkpoints")).await.json();
    assert_eq!(ck["latest"]["savepoint"]["id"], savepoint_id);
    assert_eq!(ck["latest"]["savepoint"]["checkpoint_type"], "SAVEPOINT");

    handle.join().await.unwrap();
    let final_counts = last_counts(out.take());
    assert_eq!(final_counts.values().sum::<u64>(), 40_000);

    // The job ended: its numbers add up across the edge, and it says FINISHED.
    let details = get(addr, &format!("/jobs/{jid}")).await.json();
    assert_eq!(details["state"], "FINISHED");
    assert!(details["end-time"].as_i64().unwrap() > 0);
    let v = details["vertices"].as_array().unwrap();
    assert_eq!(v[0]["metrics"]["write-records"], 40_000);
    assert_eq!(
        v[0]["metrics"]["write-records"],
        v[1]["metrics"]["read-records"]
    );
    assert_eq!(v[1]["status"], "FINISHED");
    // The keyed sum holds its 10 keys; the source's chain keeps no keyed state.
    let counts = get(addr, &format!("/jobs/{jid}/vertices/{}", ids[1]))
        .await
        .json();
    let keys: u64 = counts["subtasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["keyed-state-keys"].as_u64().unwrap())
        .sum();
    assert_eq!(keys, 10);
    let source = get(addr, &format!("/jobs/{jid}/vertices/{}", ids[0]))
        .await
        .json();
    assert!(source["subtasks"][0]["keyed-state-keys"].is_null());

    // The savepoint restores: a new job from it counts what came after it.
    let env = StreamExecutionEnvironment::new();
    env.use_web(&web);
    env.enable_checkpointing(Duration::from_millis(100))
        .set_checkpoint_storage(store.clone())
        .restore_from(RestoreFrom::Checkpoint(CheckpointId(savepoint_id)));
    let out = job(&env, 40_000, 1e9);
    let restored = env.execute_async("restored").await.unwrap();
    let rid2 = restored.observer().id().to_string();
    restored.join().await.unwrap();
    let counts = last_counts(out.take());
    assert_eq!(
        counts.values().sum::<u64>(),
        40_000,
        "the keyed sums continue from the savepoint"
    );
    let ck = get(addr, &format!("/jobs/{rid2}/checkpoints")).await.json();
    assert_eq!(ck["counts"]["restored"], 1);
    assert_eq!(ck["latest"]["restored"]["id"], savepoint_id);
    let jobs = get(addr, "/jobs").await.json();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 2);
    web.stop();
}

/// The newest rolling count per key.
fn last_counts(rows: Vec<(u64, u64)>) -> std::collections::BTreeMap<u64, u64> {
    let mut m = std::collections::BTreeMap::new();
    for (k, c) in rows {
        let e = m.entry(k).or_insert(0);
        *e = (*e).max(c);
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_changes_need_the_token() {
    let env = StreamExecutionEnvironment::new();
    let web = env.enable_web(loopback()).unwrap();
    let addr = web.local_addr();
    let _out = job(&env, 1_000_000, 2_000.0);
    let handle = env.execute_async("errors").await.unwrap();
    let jid = handle.observer().id().to_string();
    let vid = handle.observer().vertices()[0].id.clone();
    let unknown = "0123456789abcdef0123456789abcdef";
    let cases: Vec<(&str, String, u16)> = vec![
        ("GET", format!("/jobs/{unknown}"), 404),
        ("GET", "/jobs/not-an-id".to_string(), 400),
        ("GET", format!("/jobs/{jid}/vertices/{unknown}"), 404),
        ("GET", format!("/jobs/{jid}/vertices/xyz/backpressure"), 400),
        (
            "GET",
            format!("/jobs/{unknown}/vertices/{vid}/watermarks"),
            404,
        ),
        ("GET", format!("/jobs/{jid}/checkpoints/details/abc"), 400),
        ("GET", format!("/jobs/{jid}/checkpoints/details/999"), 404),
        ("GET", format!("/jobs/{jid}/checkpoints/config"), 404),
        ("GET", format!("/jobs/{jid}/savepoints/{unknown}"), 404),
        ("GET", format!("/jobs/{jid}/savepoints/nope"), 400),
        ("GET", "/no/such/path".to_string(), 404),
        ("POST", format!("/jobs/{jid}/savepoints"), 401),
        ("POST", format!("/jobs/{jid}/stop"), 401),
        ("PATCH", format!("/jobs/{jid}?mode=cancel"), 401),
        ("DELETE", format!("/jobs/{jid}"), 404),
    ];
    for (method, path, status) in &cases {
        let r = request(addr, method, path, &[], "").await;
        assert_eq!(r.status, *status, "{method} {path}: {}", r.body);
        let errors = r.json()["errors"].clone();
        assert!(
            errors[0].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: {}",
            r.body
        );
    }
    let wrong = request(
        addr,
        "POST",
        &format!("/jobs/{jid}/savepoints"),
        &[("Authorization", "Bearer nope")],
        "",
    )
    .await;
    assert_eq!(wrong.status, 401);
    let bad_json = request(
        addr,
        "POST",
        &format!("/jobs/{jid}/savepoints"),
        &[AUTH],
        "{not json",
    )
    .await;
    assert_eq!(bad_json.status, 400, "{}", bad_json.body);
    let target = request(
        addr,
        "POST",
        &format!("/jobs/{jid}/savepoints"),
        &[AUTH],
        r#"{"target-directory": "/tmp/x"}"#,
    )
    .await;
    assert_eq!(target.status, 400, "{}", target.body);
    let no_checkpoints = request(
        addr,
        "POST",
        &format!("/jobs/{jid}/savepoints"),
        &[AUTH],
        "",
    )
    .await;
    assert_eq!(no_checkpoints.status, 409, "{}", no_checkpoints.body);
    let bad_mode = request(
        addr,
        "PATCH",
        &format!("/jobs/{jid}?mode=stop"),
        &[AUTH],
        "",
    )
    .await;
    assert_eq!(bad_mode.status, 400);

    // A burst of concurrent requests while the job runs: every one answered.
    let paths = [
        "/overview".to_string(),
        format!("/jobs/{jid}"),
        format!("/jobs/{jid}/vertices/{vid}"),
        format!("/jobs/{jid}/vertices/{vid}/backpressure"),
        format!("/jobs/{jid}/vertices/{vid}/watermarks/explain"),
        "/metrics".to_string(),
        "/jobs/overview".to_string(),
        format!("/jobs/{jid}/checkpoints"),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let path = paths[i % paths.len()].clone();

        tasks.spawn(async move {
            let r = get(addr, &path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
        });
    }
    let mut answered = 0;
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
        answered += 1;
    }
    assert_eq!(answered, 1000);

    // Cancel with the token: the job ends cancelled, and says so.
    let cancel = request(
        addr,
        "PATCH",
        &format!("/jobs/{jid}?mode=cancel"),
        &[AUTH],
        "",
    )
    .await;
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    assert!(matches!(handle.join().await, Err(JobError::Cancelled)));
    let details = get(addr, &format!("/jobs/{jid}")).await.json();
    assert_eq!(details["state"], "CANCELED");
    assert!(details["timestamps"]["CANCELLING"].as_u64().unwrap() > 0);
    let again = request(
        addr,
        "PATCH",
        &format!("/jobs/{jid}?mode=cancel"),
        &[AUTH],
        "",
    )
    .await;
    assert_eq!(again.status, 409);
    web.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_parse_and_match_the_job() {
    let env = StreamExecutionEnvironment::new();
    let web = env.enable_web(loopback()).unwrap();
    let addr = web.local_addr();
    env.enable_checkpointing(Duration::from_millis(50))
        .set_checkpoint_storage(Arc::new(MemoryStore::new()));
    let _out = job(&env, 5_000, 1e9);
    let handle = env.execute_async("prom").await.unwrap();
    let jid = handle.observer().id().to_string();
    handle.join().await.unwrap();
    let r = get(addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .contains("openmetrics-text")
    );
    let lines = r.body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str, vertex: Option<&str>, subtask: Option<&str>| -> Vec<f64> {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && s.labels.get("job_id") == Some(jid.as_str()))
            .filter(|s| {
                vertex.is_none_or(|v| s.labels.get("vertex").is_some_and(|x| x.contains(v)))
            })
            .filter(|s| subtask.is_none_or(|i| s.labels.get("subtask") == Some(i)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .collect()
    };
    let out: f64 = value("actorflow_records_out_total", Some("pairs"), None)
        .iter()
        .sum();
    let into: f64 = value("actorflow_records_in_total", Some("counts"), None)
        .iter()
        .sum();
    assert_eq!(out, 5_000.0);
    assert_eq!(into, 5_000.0);
    assert_eq!(
        value("actorflow_records_out_total", Some("pairs"), Some("1")).len(),
        1
    );
    assert_eq!(value("actorflow_job_running", None, None), vec![0.0]);
    let keys: f64 = value("actorflow_keyed_state_keys", Some("counts"), None)
        .iter()
        .sum();
    assert_eq!(keys, 10.0);
    assert!(value("actorflow_keyed_state_keys", Some("pairs"), None).is_empty());
    assert_eq!(value("actorflow_job_restarts_total", None, None), vec![0.0]);
    assert!(value("actorflow_checkpoints_completed_total", None, None)[0] >= 1.0);
    for name in [
        "actorflow_busy_time_ms_per_second",
        "actorflow_backpressured_time_ms_per_second",
        "actorflow_idle_time_ms_per_second",
        "actorflow_input_lane_fill",
        "actorflow_output_lane_fill",
        "actorflow_current_output_watermark",
    ] {
        assert_eq!(value(name, None, None).len(), 4, "{name}");
    }
    web.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_reports_checkpoints_and_the_end_as_they_happen() {
    let env = StreamExecutionEnvironment::new();
    let web = env.enable_web(loopback()).unwrap();
    let addr = web.local_addr();
    env.enable_checkpointing(Duration::from_millis(50))
        .set_checkpoint_storage(Arc::new(MemoryStore::new()));
    let _out = job(&env, 10_000, 20_000.0);
    let handle = env.execute_async("events").await.unwrap();
    let jid = handle.observer().id().to_string();
    let (status, mut events) = Events::open(addr, &format!("/jobs/{jid}/events")).await;
    assert_eq!(status, 200);
    let (kind, first) = events.next().await.unwrap();
    assert_eq!(kind, "status");
    assert!(["CREATED", "RUNNING"].contains(&first["status"].as_str().unwrap()));
    let mut seen = Vec::new();
    while let Some((kind, data)) = events.next().await {
        seen.push((kind, data));
    }
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert!(kinds.contains(&"checkpoint_triggered"), "{kinds:?}");
    assert!(kinds.contains(&"checkpoint_completed"), "{kinds:?}");
    let (last, data) = seen.last().unwrap();
    assert_eq!(last, "status");
    assert_eq!(data["status"], "FINISHED");
    // Triggered before completed, for each id.
    for (k, d) in &seen {
        if k == "checkpoint_completed" && d["is_final"] == false {
            let id = &d["id"];
            let t = seen
                .iter()
                .position(|(k2, d2)| k2 == "checkpoint_triggered" && &d2["id"] == id);
            let c = seen
                .iter()
                .position(|(k2, d2)| k2 == "checkpoint_completed" && &d2["id"] == id);
            assert!(t < c, "checkpoint {id}: {kinds:?}");
        }
    }
    handle.join().await.unwrap();
    assert_eq!(
        handle_status(&web, &jid).await,
        JobStatus::Finished.as_str()
    );
    // A finished job's stream says so and ends at once.
    let (_, mut again) = Events::open(addr, &format!("/jobs/{jid}/events")).await;
    let (kind, data) = again.next().await.unwrap();
    assert_eq!(
        (kind.as_str(), data["status"].as_str()),
        ("status", Some("FINISHED"))
    );
    assert!(again.next().await.is_none());
    web.stop();
}

async fn handle_status(web: &WebServer, jid: &str) -> String {
    get(web.local_addr(), &format!("/jobs/{jid}")).await.json()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let first = WebServer::start(loopback()).unwrap();
    let err = WebServer::start(WebConfig::new(first.local_addr())).unwrap_err();
    assert!(
        err.to_string().contains(&first.local_addr().to_string()),
        "{err}"
    );
    assert!(WebServer::start(loopback().token("has space")).is_err());
    first.stop();
}

#[path = "../common/mod.rs"]
mod common;

mod browser;

use browser::{AUTH_TOKEN, Browser, Example};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_the_graph_and_colours_the_backpressured_vertex() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let example = Example::start(
        "backpressure",
        &["--records", "100000000", "--sink-delay-ms", "5"],
    );
    let jid = example.job().await;
    browser
        .goto(&format!("http://{}/#/jobs/{jid}", example.addr))
        .await;
    let vertices = browser
        .wait_for(
            "both vertices",
            "const v = document.querySelectorAll('#job-graph .vertex'); return v.length === 2 ? v.length : 0",
        )
        .await;
    assert_eq!(vertices, 2);
    let edge = browser
        .script("return document.querySelector('#job-graph .edge text').textContent")
        .await;
    assert_eq!(edge, "FORWARD");
    // The source waits for the slow sink almost all the time: drawn as backpressured.
    let source = browser
        .wait_for(
            "the source coloured as backpressured",
            "const v = [...document.querySelectorAll('#job-graph .vertex')].find(v => v.dataset.backpressure === 'high'); return v ? v.textContent : null",
        )
        .await;
    assert!(source.as_str().unwrap().contains("fast source"), "{source}");
    let sink = browser
        .script("return [...document.querySelectorAll('#job-graph .vertex')].find(v => v.textContent.includes('slow sink')).dataset.backpressure")
        .await;
    assert_eq!(sink, "ok");
    // The vertex page lists its subtasks with their lanes.
    browser
        .click("#job-graph .vertex[data-backpressure='high']")
        .await;
    let rows = browser
        .wait_for(
            "the vertex's subtasks",
            "return document.querySelectorAll('#vertex-detail tr[data-subtask]').length",
        )
        .await;
    assert_eq!(rows, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watermark_view_names_the_channel_that_holds_the_watermark_back() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let example = Example::start("idle_partitions", &["--seconds", "120"]);
    let jid = example.job().await;
    browser
        .goto(&format!("http://{}/#/jobs/{jid}/watermarks", example.addr))
        .await;
    // Partition 3 never sends anything: the window's input channel from source subtask 3
    // holds the minimum, and the hint says what to do.
    let hint = browser
        .wait_for(
            "a hint about the silent channel",
            "const h = [...document.querySelectorAll('.watermark-hint')].map(h => h.textContent).find(t => t.includes('input channel 3')); return h || null",
        )
        .await;
    let hint = hint.as_str().unwrap();
    assert!(hint.contains("subtask 3"), "{hint}");
    assert!(hint.contains("with_idleness"), "{hint}");
    let held = browser
        .script("return [...document.querySelectorAll(\"section[data-vertex-name*='1 s windows'] tr.holds-min\")].map(r => r.dataset.channel)")
        .await;
    assert_eq!(held, json!(["3"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_savepoint_button_takes_a_savepoint_that_the_store_holds() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("actorflow-web-savepoint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("out.csv");
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data/events.csv");
    let example = Example::start(
        "window_agg",
        &[
            "--input",
            data,
            "--output",
            out.to_str().unwrap(),
            "--window",
            "tumbling",
            "--size",
            "100",
            "--checkpoint-dir",
            dir.to_str().unwrap(),
            "--checkpoint-interval",
            "200",
            // 400 lines at 5 per second: the job runs for 80 s, long past the test.
            "--source-rate",
            "5",
        ],
    );
    let jid = example.job().await;
    browser
        .goto(&format!("http://{}/#/jobs/{jid}/checkpoints", example.addr))
        .await;
    browser
        .wait_for(
            "a running job",
            "const s = document.getElementById('job-state'); return s && s.textContent === 'RUNNING'",
        )
        .await;
    // Without the token the server refuses, and the page says why.
    browser.click("#savepoint-btn").await;
    let refused = browser
        .wait_for(
            "the refusal",
            "const r = document.getElementById('savepoint-result').textContent; return r.includes('401') ? r : null",
        )
        .await;
    assert!(refused.as_str().unwrap().contains("token"), "{refused}");
    browser
        .script(&format!(
            "const t = document.getElementById('token'); t.value = '{AUTH_TOKEN}'; t.dispatchEvent(new Event('change')); return true"
        ))
        .await;
    browser.click("#savepoint-btn").await;
    let done = browser
        .wait_for(
            "a completed savepoint",
            "const r = document.getElementById('savepoint-result').textContent; return r.includes('completed') ? r : null",
        )
        .await;
    let text = done.as_str().unwrap().to_string();
    let id: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let ck = get(example.addr, &format!("/jobs/{jid}/checkpoints"))
        .await
        .json();
    assert_eq!(ck["latest"]["savepoint"]["id"], id, "{ck}");
    // The store holds it: a savepoint, whole (every blob verifies).
    drop(example);
    let store = actorflow::snapshot::SledStore::open(dir.join("snapshots")).unwrap();
    let snapshot = store.load(CheckpointId(id)).unwrap();
    assert_eq!(
        snapshot.manifest.kind,
        actorflow_runtime::CheckpointKind::Savepoint
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The failure demo in the dashboard: the exception history shows the injected failure and
/// the restart from a checkpoint. `ACTORFLOW_SCREENSHOT=path` also saves a screenshot (how
/// `docs/img/dashboard.png` is made).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_failure_demos_restart() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let example = Example::start("failure_demo", &["--web-keep"]);
    // The reference run comes first; the demo is the second job.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let jid = loop {
        let jobs = get(example.addr, "/jobs/overview").await.json();
        if let Some(j) = jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "failure demo")
        {
            break j["jid"].as_str().unwrap().to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failure demo job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    browser
        .goto(&format!("http://{}/#/jobs/{jid}/exceptions", example.addr))
        .await;
    let entry = browser
        .wait_for(
            "the restart in the exception history",
            "const e = document.querySelector('#exception-history li.failure'); return e ? e.textContent : null",
        )
        .await;
    let entry = entry.as_str().unwrap();
    assert!(entry.contains("restarted"), "{entry}");
    assert!(entry.contains("injected"), "{entry}");
    if let Some(path) = std::env::var_os("ACTORFLOW_SCREENSHOT") {
        let details = get(example.addr, &format!("/jobs/{jid}")).await.json();
        let window = details["vertices"][1]["id"].as_str().unwrap().to_string();
        browser
            .goto(&format!(
                "http://{}/#/jobs/{jid}/vertices/{window}",
                example.addr
            ))
            .await;
        browser
            .wait_for(
                "the graph and the window's subtasks",
                "return document.querySelectorAll('#job-graph .vertex').length && document.querySelectorAll('#vertex-detail tr[data-subtask]').length",
            )
            .await;
        browser.screenshot(std::path::Path::new(&path)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_and_status_history_show_a_restart_from_a_checkpoint() {
    let env = StreamExecutionEnvironment::new();
    let web = env.enable_web(loopback()).unwrap();
    let addr = web.local_addr();
    env.enable_checkpointing(Duration::from_millis(50))
        .set_checkpoint_storage(Arc::new(MemoryStore::new()))
        .set_restart_strategy(actorflow::restart::RestartStrategy::FixedDelay {
            attempts: 3,
            delay: Duration::from_millis(10),
        })
        .set_fault_plan(actorflow::fault::FaultPlan::parse("panic@counts#1:records=8000").unwrap());
    let out = job(&env, 20_000, 20_000.0);
    let handle = env.execute_async("failing").await.unwrap();
    let jid = handle.observer().id().to_string();
    handle.join().await.unwrap();
    assert_eq!(last_counts(out.take()).values().sum::<u64>(), 20_000);
    let ex = get(addr, &format!("/jobs/{jid}/exceptions")).await.json();
    let entries = ex["exceptionHistory"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{ex}");
    let e = &entries[0];
    assert!(
        e["stacktrace"].as_str().unwrap().contains("injected"),
        "{e}"
    );
    assert!(e["taskName"].as_str().unwrap().contains("counts"), "{e}");
    assert_eq!(e["subtaskIndex"], 1);
    assert_eq!(e["action"]["type"], "REGION_RESTARTED");
    assert_eq!(e["action"]["attempt"], 1);
    assert!(
        e["action"]["from_checkpoint"].is_u64(),
        "restarted from a checkpoint: {e}"
    );
    assert_eq!(ex["root-exception"], e["stacktrace"]);
    let details = get(addr, &format!("/jobs/{jid}")).await.json();
    assert_eq!(details["restarts"], 1);
    let history: Vec<&str> = details["status-history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        ["CREATED", "RUNNING", "RESTARTING", "RUNNING", "FINISHED"]
    );
    let ck = get(addr, &format!("/jobs/{jid}/checkpoints")).await.json();
    assert_eq!(ck["counts"]["restored"], 1);
    assert_eq!(
        ck["latest"]["restored"]["id"],
        e["action"]["from_checkpoint"]
    );
    web.stop();
}

/// A source that publishes a gauge (as the Kafka source publishes its offsets and lag).
struct Gauged {
    counters: Option<actorflow_runtime::operators::operator::OperatorCounters>,
    left: u64,
}

impl Source for Gauged {
    type Output = u64;
    async fn open(&mut self, info: &TaskInfo) -> Result<(), UserError> {
        self.counters = Some(info.counters.clone());
        Ok(())
    }
    async fn next_batch(&mut self, out: &mut Collector<u64>) -> Result<SourceStatus, UserError> {
        if self.left == 0 {
            return Ok(SourceStatus::End);
        }
        out.collect(self.left);
        self.left -= 1;
        if let Some(c) = &self.counters {
            c.set_gauge("test.remaining", self.left as i64);
        }
        Ok(SourceStatus::More)
    }
}

/// Flink's metrics endpoints list a vertex's and a subtask's metrics, gauges included, and
/// `?get=` picks values; `/metrics` has the gauge too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoints_list_counters_and_gauges() {
    let env = StreamExecutionEnvironment::new();
    let web = env.enable_web(loopback()).unwrap();
    let addr = web.local_addr();
    let _out = env
        .add_source(
            "gauged",
            actorflow::SourceFn::new(|_: &TaskInfo| Gauged {
                counters: None,
                left: 100,
            })
            .bounded(),
        )
        .collect();
    let handle = env.execute_async("gauges").await.unwrap();
    let jid = handle.observer().id().to_string();
    handle.join().await.unwrap();
    let details: Value =
        serde_json::from_str(&get(addr, &format!("/jobs/{jid}")).await.body).unwrap();
    let vid = &vertex_ids(&details)[0];
    let r = get(addr, &format!("/jobs/{jid}/vertices/{vid}/metrics")).await;
    assert_eq!(r.status, 200);
    let ids: Value = serde_json::from_str(&r.body).unwrap();
    let ids: Vec<&str> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"0.numRecordsOut") && ids.contains(&"0.test.remaining"),
        "{ids:?}"
    );
    let r = get(
        addr,
        &format!(
            "/jobs/{jid}/vertices/{vid}/subtasks/0/metrics?get=numRecordsOut,test.remaining,nope"
        ),
    )
    .await;
    let got: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        got,
        json!([
            {"id": "numRecordsOut", "value": "100"},
            {"id": "test.remaining", "value": "0"}
        ])
    );
    let r = get(
        addr,
        &format!("/jobs/{jid}/vertices/{vid}/subtasks/7/metrics"),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = get(
        addr,
        &format!("/jobs/{jid}/vertices/{vid}/subtasks/x/metrics"),
    )
    .await;
    assert_eq!(r.status, 400);
    let prom = get(addr, "/metrics").await.body;
    assert!(
        prom.lines()
            .any(|l| l.starts_with("actorflow_operator_gauge{")
                && l.contains("name=\"test.remaining\"")
                && l.ends_with(" 0")),
        "{prom}"
    );
    web.stop();
}

/// A Kafka source's gauges on the dashboard: the source vertex lists each partition's
/// offset and lag (`kafka_idle`, cargo features `web` and `kafka`, a broker from
/// `scripts/kafka.sh`). `ACTORFLOW_SCREENSHOT_KAFKA=path` also saves a screenshot (how
/// `docs/img/dashboard-kafka.png` is made).
#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_a_kafka_sources_offsets_and_lag() {
    let brokers = match std::env::var("ACTORFLOW_KAFKA_BROKERS") {
        Ok(b) => b,
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("ACTORFLOW_KAFKA_BROKERS is not set: `eval \"$(scripts/kafka.sh start)\"`")
        }
        Err(_) => {
            eprintln!("NOT RUN: needs a Kafka broker (`eval \"$(scripts/kafka.sh start)\"`)");
            return;
        }
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    let example = Example::start("kafka_idle", &["--brokers", &brokers, "--seconds", "60"]);
    let jid = example.job().await;
    let details = get(example.addr, &format!("/jobs/{jid}")).await.json();
    let source = details["vertices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str().unwrap_or("").contains("kafka"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    browser
        .goto(&format!(
            "http://{}/#/jobs/{jid}/vertices/{source}",
            example.addr
        ))
        .await;
    let text = browser
        .wait_for(
            "the source's partition gauges",
            "const t = document.querySelector('#vertex-gauges'); \
             return t && t.innerText.includes('.lag') && t.innerText.includes('currentOffset') ? t.innerText : null",
        )
        .await;
    let text = text.as_str().unwrap_or_default().to_string();
    assert!(
        text.contains("KafkaSourceReader.topic.kafka-idle-"),
        "{text}"
    );
    assert!(
        text.contains(".partition.3.lag"),
        "the empty partition too: {text}"
    );
    if let Some(path) = std::env::var_os("ACTORFLOW_SCREENSHOT_KAFKA") {
        browser.screenshot(std::path::Path::new(&path)).await;
    }
}
