//! Top-N items per sliding window, with `window_all` and a process function.
//!
//! ```text
//! cargo run --release --example topn -- [--n 3] [--size-ms 60000] [--slide-ms 20000]
//! ```
//!
//! Clicks on items (seeded, deterministic) are counted per sliding event-time window over the
//! whole stream — `window_all` runs on one subtask — and a process function ranks the items of
//! each window and emits the N most clicked, ties broken by item name.

use actorflow::prelude::*;
use actorflow::window::SlidingWindows;
use std::collections::HashMap;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Click = (String, i64); // (item, timestamp ms)

fn flag(name: &str, default: i64) -> Result<i64, String> {
    let mut args = std::env::args().skip_while(|a| a != name);
    match args.nth(1) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("{name} takes an integer, got '{v}'")),
    }
}

/// Deterministic clicks: item popularity shifts over time.
fn clicks() -> Vec<Click> {
    let items = ["apple", "banana", "cherry", "durian", "elderberry"];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..3_000)
        .map(|i: i64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let phase = (i / 1_000) as usize; // the favourite changes every 1000 clicks
            let pick = if state.is_multiple_of(3) {
                phase % items.len()
            } else {
                (state % items.len() as u64) as usize
            };
            (items[pick].to_string(), i * 60) // one click every 60 ms of event time
        })
        .collect()
}

fn main() -> Result<(), UserError> {
    let n = flag("--n", 3)? as usize;
    let size = flag("--size-ms", 60_000)?;
    let slide = flag("--slide-ms", 20_000)?;
    let env = StreamExecutionEnvironment::new();
    let top = env
        .from_collection(clicks())
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|c: &Click, _| c.1),
        )
        .window_all(SlidingWindows::event_time(size, slide)?)
        .process(
            move |_: &(),
                  ctx: &mut WindowContext<'_, TimeWindow>,
                  clicks: Vec<Click>,
                  out: &mut Collector<String>| {
                let mut counts: HashMap<&str, usize> = HashMap::new();
                for (item, _) in &clicks {
                    *counts.entry(item.as_str()).or_default() += 1;
                }
                let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
                ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                let w = ctx.window();
                let list: Vec<String> = ranked
                    .iter()
                    .take(n)
                    .map(|(item, c)| format!("{item}={c}"))
                    .collect();
                out.collect(format!(
                    "[{:>6}, {:>6}) ms  {}",
                    w.start,
                    w.end,
                    list.join("  ")
                ));
                Ok(())
            },
        )
        .collect();
    env.execute_blocking("topn")?;
    let mut lines = top.take();
    lines.sort_by_key(|l| {
        l.split(',')
            .next()
            .and_then(|s| s.trim_start_matches('[').trim().parse::<i64>().ok())
    });
    println!("top {n} items per {size} ms window, every {slide} ms:");
    for l in lines {
        println!("  {l}");
    }
    Ok(())
}
