//! Combining the watermarks of several input channels, with Flink's `StatusWatermarkValve`
//! rules:
//!
//! * each channel's watermark only moves forward;
//! * the output is the minimum over active, *aligned* channels, emitted only when it increases;
//! * an idle channel is left out; when every channel is idle the valve emits the maximum
//!   watermark over all channels and goes idle itself;
//! * a channel back from idle counts again only once its watermark has caught up with the last
//!   output (it is "aligned" again).

use crate::dataplane::message::WatermarkStatus;
use crate::types::Watermark;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Channel {
    watermark: i64,
    idle: bool,
    aligned: bool,
}

/// What the valve emits in response to an input, in this order: a watermark, then a status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValveOutput {
    /// A new combined watermark.
    pub watermark: Option<Watermark>,
    /// A new combined status.
    pub status: Option<WatermarkStatus>,
}

/// Combines per-channel watermarks and statuses. Plain state, no I/O.
///
/// # Examples
///
/// ```
/// use actorflow_runtime::time::valve::WatermarkValve;
/// use actorflow_runtime::{Watermark, WatermarkStatus};
/// let mut valve = WatermarkValve::new(2);
/// assert_eq!(valve.input_watermark(0, Watermark(10)).watermark, None); // channel 1 holds it back
/// assert_eq!(valve.input_watermark(1, Watermark(7)).watermark, Some(Watermark(7)));
/// // Channel 1 goes idle: channel 0 alone decides.
/// assert_eq!(valve.input_status(1, WatermarkStatus::Idle).watermark, Some(Watermark(10)));
/// ```
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WatermarkValve {
    channels: Vec<Channel>,
    last_output: i64,
    idle: bool,
}

impl WatermarkValve {
    /// A valve over `channels` inputs, all active with no watermark yet.
    pub fn new(channels: usize) -> Self {
        WatermarkValve {
            channels: vec![
                Channel {
                    watermark: i64::MIN,
                    idle: false,
                    aligned: true,
                };
                channels
            ],
            last_output: i64::MIN,
            idle: false,
        }
    }

    /// Channel `channel`'s watermark (`i64::MIN` before its first) and whether it is idle.
    pub fn channel(&self, channel: usize) -> Option<(i64, bool)> {
        self.channels.get(channel).map(|c| (c.watermark, c.idle))
    }

    /// The number of channels.
    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// The last watermark emitted.
    pub fn current(&self) -> Watermark {
        Watermark(self.last_output)
    }

    /// A watermark arrived on `channel`.
    pub fn input_watermark(&mut self, channel: usize, wm: Watermark) -> ValveOutput {
        let mut out = ValveOutput::default();
        let Some(c) = self.channels.get_mut(channel) else {
            return out;
        };
        if self.idle || c.idle || wm.0 <= c.watermark {
            return out;
        }
        c.watermark = wm.0;
        if !c.aligned && wm.0 >= self.last_output {
            c.aligned = true;
        }
        out.watermark = self.new_min_across_aligned();
        out
    }

    /// A status change arrived on `channel`.
    pub fn input_status(&mut self, channel: usize, status: WatermarkStatus) -> ValveOutput {
        let mut out = ValveOutput::default();
        let last_output = self.last_output;
        let Some(c) = self.channels.get_mut(channel) else {
            return out;
        };
        match status {
            WatermarkStatus::Idle if !c.idle => {
                c.idle = true;
                c.aligned = false;
                let was_min = c.watermark == last_output;
                if self.channels.iter().all(|c| c.idle) {
                    if was_min {
                        out.watermark = self.max_across_all();
                    }
                    self.idle = true;
                    out.status = Some(WatermarkStatus::Idle);
                } else if was_min {
                    out.watermark = self.new_min_across_aligned();
                }
            }
            WatermarkStatus::Active if c.idle => {
                c.idle = false;
                if c.watermark >= last_output {
                    c.aligned = true;
                }
                if self.idle {
                    self.idle = false;
                    out.status = Some(WatermarkStatus::Active);
                }
            }
            _ => {}
        }
        out
    }

    /// `channel` ended: it will never hold event time back again.
    pub fn input_ended(&mut self, channel: usize) -> ValveOutput {
        let mut out = self.input_status(channel, WatermarkStatus::Active);
        let wm = self.input_watermark(channel, Watermark::MAX);
        out.watermark = wm.watermark.or(out.watermark);
        out
    }

    fn new_min_across_aligned(&mut self) -> Option<Watermark> {
        let min = self
            .channels
            .iter()
            .filter(|c| c.aligned)
            .map(|c| c.watermark)
            .min()?;
        (min > self.last_output).then(|| {
            self.last_output = min;
            Watermark(min)
        })
    }

    fn max_across_all(&mut self) -> Option<Watermark> {
        let max = self.channels.iter().map(|c| c.watermark).max()?;
        (max > self.last_output).then(|| {
            self.last_output = max;
            Watermark(max)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WatermarkStatus::{Active, Idle};

    fn wm(v: i64) -> Option<Watermark> {
        Some(Watermark(v))
    }

    #[test]
    fn minimum_emitted_only_when_it_increases() {
        let mut v = WatermarkValve::new(3);
        assert_eq!(v.input_watermark(0, Watermark(5)).watermark, None);
        assert_eq!(v.input_watermark(1, Watermark(3)).watermark, None);
        assert_eq!(v.input_watermark(2, Watermark(4)).watermark, wm(3));
        // Regressions are ignored.
        assert_eq!(v.input_watermark(1, Watermark(1)).watermark, None);
        assert_eq!(v.input_watermark(1, Watermark(9)).watermark, wm(4));
        assert_eq!(v.input_watermark(2, Watermark(5)).watermark, wm(5));
        assert_eq!(v.current(), Watermark(5));
    }

    #[test]
    fn all_idle_flushes_max_then_returning_channel_must_catch_up() {
        let mut v = WatermarkValve::new(2);
        v.input_watermark(0, Watermark(10));
        assert_eq!(v.input_watermark(1, Watermark(20)).watermark, wm(10));
        // Channel 0 (the minimum) goes idle: channel 1 decides.
        let out = v.input_status(0, Idle);
        assert_eq!(
            out,
            ValveOutput {
                watermark: wm(20),
                status: None
            }
        );
        // Channel 1 goes idle too: the valve goes idle (max already out).
        assert_eq!(
            v.input_status(1, Idle),
            ValveOutput {
                watermark: None,
                status: Some(Idle)
            }
        );
        // Watermarks of idle channels are ignored.
        assert_eq!(v.input_watermark(1, Watermark(30)).watermark, None);
        // Channel 0 comes back behind the output: active, but not aligned yet.
        assert_eq!(
            v.input_status(0, Active),
            ValveOutput {
                watermark: None,
                status: Some(Active)
            }
        );
        assert_eq!(v.input_watermark(0, Watermark(15)).watermark, None);
        assert_eq!(v.input_watermark(0, Watermark(25)).watermark, wm(25));
    }

    #[test]
    fn ended_channels_stop_holding_back() {
        let mut v = WatermarkValve::new(2);
        v.input_watermark(0, Watermark(100));
        assert_eq!(v.input_ended(1).watermark, wm(100));
        assert_eq!(v.input_ended(0).watermark, Some(Watermark::MAX));
    }
}
