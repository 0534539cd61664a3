//! The QUIC transport settings that `loadbench` and `netbench` both let a
//! run change, to measure a default against its alternative.

use std::time::Duration;

use quicall::Limits;
use quicall::transport::Congestion;

/// Flags over [`Limits`]' network tuning (`#[command(flatten)]`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct QuicTuning {
    /// The max ACK delay (microseconds) each QUIC system asks a network
    /// peer for (`Limits::max_ack_delay`); 0 keeps the peer's own (25 ms).
    #[arg(long)]
    pub max_ack_delay_us: Option<u64>,
    /// Run the QUIC systems' timers on tokio's 1 ms tick
    /// (`Limits::precise_timers` false), as before quicall kept their last
    /// millisecond itself.
    #[arg(long)]
    pub coarse_timers: bool,
    /// The granularity of the QUIC systems' loss-recovery timers
    /// (microseconds; `Limits::timer_granularity`).
    #[arg(long)]
    pub timer_granularity_us: Option<u64>,
    /// The round trip the QUIC systems assume before measuring one
    /// (milliseconds; `Limits::initial_rtt`).
    #[arg(long)]
    pub initial_rtt_ms: Option<f64>,
    /// Loss detection's packet threshold of the QUIC systems
    /// (`Limits::packet_threshold`).
    #[arg(long)]
    pub packet_threshold: Option<u32>,
    /// Loss detection's time threshold of the QUIC systems, a factor of the
    /// round trip (`Limits::time_threshold`).
    #[arg(long)]
    pub time_threshold: Option<f32>,
    /// Congestion controller of the QUIC systems, towards loopback and
    /// network peers alike: cubic, newreno, bbr (default: `Limits`', CUBIC
    /// on loopback and BBR towards the network).
    #[arg(long)]
    pub congestion: Option<Congestion>,
}

impl QuicTuning {
    /// `limits` with these flags applied (an absent flag keeps its field).
    pub fn apply(&self, limits: Limits) -> Limits {
        Limits {
            congestion: self.congestion.unwrap_or(limits.congestion),
            loopback_congestion: self.congestion.unwrap_or(limits.loopback_congestion),
            max_ack_delay: self.max_ack_delay_us.map_or(limits.max_ack_delay, |us| {
                (us > 0).then(|| Duration::from_micros(us))
            }),
            precise_timers: limits.precise_timers && !self.coarse_timers,
            timer_granularity: self
                .timer_granularity_us
                .map_or(limits.timer_granularity, Duration::from_micros),
            initial_rtt: self.initial_rtt_ms.map_or(limits.initial_rtt, |ms| {
                Duration::from_secs_f64(ms / 1000.0)
            }),
            packet_threshold: self.packet_threshold.unwrap_or(limits.packet_threshold),
            time_threshold: self.time_threshold.unwrap_or(limits.time_threshold),
            ..limits
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_flag_changes_its_field_and_no_flag_changes_nothing() {
        let defaults = Limits::default();
        let same = QuicTuning::default().apply(defaults.clone());
        assert_eq!(same.congestion, defaults.congestion);
        assert_eq!(same.loopback_congestion, defaults.loopback_congestion);
        assert_eq!(same.max_ack_delay, defaults.max_ack_delay);
        assert!(same.precise_timers);
        let tuned = QuicTuning {
            max_ack_delay_us: Some(0),
            coarse_timers: true,
            timer_granularity_us: Some(250),
            initial_rtt_ms: Some(20.0),
            packet_threshold: Some(1),
            time_threshold: Some(1.0),
            congestion: Some(Congestion::NewReno),
        }
        .apply(defaults.clone());
        assert_eq!(tuned.congestion, Congestion::NewReno);
        assert_eq!(tuned.loopback_congestion, Congestion::NewReno);
        assert_eq!(tuned.max_ack_delay, None);
        assert!(!tuned.precise_timers);
        assert_eq!(tuned.timer_granularity, Duration::from_micros(250));
        assert_eq!(tuned.initial_rtt, Duration::from_millis(20));
        assert_eq!(tuned.packet_threshold, 1);
        assert_eq!(tuned.time_threshold, 1.0);
        let delay = QuicTuning {
            max_ack_delay_us: Some(250),
            ..QuicTuning::default()
        };
        assert_eq!(
            delay.apply(defaults).max_ack_delay,
            Some(Duration::from_micros(250))
        );
    }
}
