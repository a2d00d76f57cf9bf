//! Timers are deduplicated: registering the same timer again does not make it fire twice.
//!
//! ```text
//! cargo run --release --example timers
//! ```
//!
//! A keyed process function sees page views and, for every view, registers an event-time timer
//! at the end of the view's minute — so one user and minute get many registrations of the same
//! timer. Flink keeps one timer per (key, timestamp), and so do we: each fires once, and the
//! function then reports the views of that minute from keyed state. The example prints how
//! many timers were registered and how many fired.

use actorflow::keyed_state::{MapState, ValueState};
use actorflow::operators::OpenContext;
use actorflow::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type View = (String, i64); // (user, timestamp ms)

#[derive(Clone, Default)]
struct MinuteReport {
    /// Views per minute of the current user.
    views: Option<MapState<i64, u64>>,
    /// How many registrations this user made.
    registrations: Option<ValueState<u64>>,
}

const MINUTE: i64 = 60_000;

impl KeyedProcessFunction<String, View, String> for MinuteReport {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.views = Some(ctx.state.map_state("views", None)?);
        self.registrations = Some(ctx.state.value_state("registrations", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        view: View,
        ctx: &mut KeyedContext<'_, String>,
        _: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let (views, registrations) = (
            self.views.as_ref().ok_or("not open")?,
            self.registrations.as_ref().ok_or("not open")?,
        );
        let minute_end = (view.1.div_euclid(MINUTE) + 1) * MINUTE - 1;
        let n = views.get(ctx.state(), &minute_end)?.unwrap_or(0);
        views.put(ctx.state(), minute_end, n + 1)?;
        // The same (user, time) timer, registered once per view: it fires once.
        ctx.register_event_time_timer(Timestamp(minute_end));
        let r = registrations.value(ctx.state())?.unwrap_or(0);
        registrations.update(ctx.state(), r + 1)?;
        Ok(())
    }

    fn on_timer(
        &mut self,
        time: Timestamp,
        ctx: &mut KeyedContext<'_, String>,
        out: &mut Collector<String>,
    ) -> Result<(), UserError> {
        let (views, registrations) = (
            self.views.as_ref().ok_or("not open")?,
            self.registrations.as_ref().ok_or("not open")?,
        );
        let n = views.get(ctx.state(), &time.0)?.unwrap_or(0);
        views.remove(ctx.state(), &time.0)?;
        let r = registrations.value(ctx.state())?.unwrap_or(0);
        out.collect(format!(
            "{} minute {}: {n} views; timer fired once (user's registrations so far: {r})",
            ctx.current_key(),
            time.0 / MINUTE
        ));
        Ok(())
    }
}

fn main() -> Result<(), JobError> {
    let mut views: Vec<View> = Vec::new();
    for i in 0..40 {
        views.push(("alice".into(), i * 3_000)); // 20 views per minute, for two minutes
        if i % 4 == 0 {
            views.push(("bob".into(), i * 3_000 + 7));
        }
    }
    let registrations = views.len();
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    let reports = env
        .from_collection(views)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .punctuated()
                .with_timestamp_assigner(|v: &View, _| v.1),
        )
        .key_by(|v: &View| v.0.clone())
        .process(MinuteReport::default())
        .collect();
    env.execute_blocking("timers")?;
    let mut lines = reports.take();
    lines.sort();
    println!(
        "{registrations} timer registrations, {} timers fired:",
        lines.len()
    );
    for l in lines {
        println!("  {l}");
    }
    Ok(())
}
