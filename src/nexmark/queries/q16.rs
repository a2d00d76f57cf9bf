//! q16 — channel statistics: q15 grouped by channel and day, with the latest minute of the
//! day seen (`MAX(DATE_FORMAT(dateTime, 'HH:mm')) AS minute`). Columns: `channel, day,
//! minute`, then q15's twelve counts. An updating query, keyed by (channel, day). API: as
//! q15.

use super::q15::{DistinctCounts, TimerArm};
use super::{Change, CsvField, CsvRow, bids};
use crate::datastream::DataStream;
use crate::nexmark::model::{Bid, Event, channel_name, format_day};
use actorflow_runtime::operators::{KeyedContext, KeyedProcessFunction, OpenContext};
use actorflow_runtime::state::keyed_state::ValueState;
use actorflow_runtime::{Collector, Timestamp, UserError};

/// q16's row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Q16Row {
    /// The channel.
    pub channel: String,
    /// `yyyy-MM-dd`.
    pub day: String,
    /// `HH:mm`, the latest minute of the day with a bid.
    pub minute: String,
    /// q15's counts.
    pub counts: [u64; 12],
}

impl CsvRow for Q16Row {
    fn write_csv(&self, out: &mut String) {
        self.channel.write_field(out);
        out.push(',');
        self.day.write_field(out);
        out.push(',');
        self.minute.write_field(out);
        for c in &self.counts {
            out.push(',');
            c.write_field(out);
        }
    }
}

/// q16's changes, keyed by (channel id, day).
pub type Q16Change = Change<(u16, i64), Q16Row>;

#[derive(Clone, Default)]
struct PerChannelDay {
    counts: Option<ValueState<(DistinctCounts, i64)>>,
}

impl KeyedProcessFunction<(u16, i64), Bid, Q16Change> for PerChannelDay {
    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), UserError> {
        self.counts = Some(ctx.state.value_state("counts-and-minute", None)?);
        Ok(())
    }

    fn process_element(
        &mut self,
        b: Bid,
        ctx: &mut KeyedContext<'_, (u16, i64)>,
        _: &mut Collector<Q16Change>,
    ) -> Result<(), UserError> {
        let Some(counts) = self.counts.as_ref() else {
            return Err("q16 used before open".into());
        };
        let mut arm = TimerArm {
            watermark: ctx.current_watermark().0,
        };
        let minute = b.date_time.rem_euclid(86_400_000) / 60_000;
        if let Some(at) = counts.modify(ctx.state(), |(c, max_minute)| {
            c.add(&b);
            *max_minute = (*max_minute).max(minute);
            c.arm(&mut arm)
        })? {
            ctx.register_event_time_timer(at);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        _: Timestamp,
        ctx: &mut KeyedContext<'_, (u16, i64)>,
        out: &mut Collector<Q16Change>,
    ) -> Result<(), UserError> {
        let Some(counts) = self.counts.as_ref() else {
            return Err("q16 used before open".into());
        };
        let (channel, day) = *ctx.current_key();
        let (c, minute) = counts.modify(ctx.state(), |(c, m)| (c.counts(), *m))?;
        let name = channel_name(channel).to_string();
        out.collect(Change::Upsert(
            (channel, day),
            Q16Row {
                channel: name,
                day: format_day(day * 86_400_000),
                minute: format!("{:02}:{:02}", minute / 60, minute % 60),
                counts: c,
            },
        ));
        Ok(())
    }
}

/// q16 over `events`.
pub fn q16(events: &DataStream<Event>) -> DataStream<Q16Change> {
    bids(events)
        .key_by(|b: &Bid| (b.channel_id, b.date_time.div_euclid(86_400_000)))
        .process(PerChannelDay::default())
        .name("q16")
}
