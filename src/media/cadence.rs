//! The frame rate a source's timestamps show: the check on a container's rate hint, which can
//! be a multiple of the real rate (a Matroska `DefaultDuration` written from an H.264 stream
//! coded for 60 fps, holding 30 fps).

use ffmpeg_next::{self as ff, format};

/// How far into the video the timestamps are read, in seconds and in its packets.
const WINDOW_SECONDS: f64 = 5.0;
const WINDOW_PACKETS: usize = 300;
/// Packets of all streams read at most, so a file whose video packets are rare stops early.
const MAX_PACKETS: usize = 5000;

/// The constant frame rate the first seconds of `stream` show: one over the median interval
/// between presentation times, refined by the mean of the intervals near it (a millisecond
/// time base rounds 33.3 ms to 33 or 34). 0 when the timestamps are missing, too few, or vary
/// (a variable-rate recording), so the container's rate stands. Seeks to the file's start and
/// leaves the read position anywhere.
pub(super) fn steady_frame_rate(input: &mut format::context::Input, stream: usize) -> f64 {
    let start = super::input::start_micros(input);
    // SAFETY: a plain seek on the open context we own.
    let sought =
        unsafe { ff::ffi::avformat_seek_file(input.as_mut_ptr(), -1, i64::MIN, start, start, 0) };
    let Some(time_base) = input.stream(stream).map(|s| f64::from(s.time_base())) else {
        return 0.0;
    };
    if sought < 0 {
        return 0.0;
    }
    let mut times = Vec::new();
    for _ in 0..MAX_PACKETS {
        let mut packet = ff::Packet::empty();
        if packet.read(input).is_err() {
            break;
        }
        let Some(pts) = packet.pts().filter(|_| packet.stream() == stream) else {
            continue;
        };
        let t = pts as f64 * time_base;
        if times.len() >= WINDOW_PACKETS || times.first().is_some_and(|f| t - f > WINDOW_SECONDS) {
            break;
        }
        times.push(t);
    }
    rate_of(times)
}

/// The steady rate of presentation times given in decode order (see [`steady_frame_rate`]).
fn rate_of(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    let intervals: Vec<f64> = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .collect();
    if intervals.len() < 10 {
        return 0.0;
    }
    let mut sorted = intervals.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let near: Vec<f64> = intervals
        .into_iter()
        .filter(|d| (d - median).abs() <= median * 0.25)
        .collect();
    // Steady: nearly every interval is the median one.
    if (near.len() as f64) < sorted.len() as f64 * 0.9 {
        return 0.0;
    }
    near.len() as f64 / near.iter().sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::rate_of;

    #[test]
    fn the_rate_follows_steady_timestamps_only() {
        // 30 fps in milliseconds, as Matroska stores it; B-frames out of order.
        let ms: Vec<f64> = (0..90).map(|n| (n * 1000 / 30) as f64 / 1000.0).collect();
        let mut decode_order = ms.clone();
        decode_order.swap(3, 4);
        let rate = rate_of(decode_order);
        assert!((rate - 30.0).abs() < 0.05, "{rate}");
        // Variable: 1 s pauses between bursts of 5 frames at 60 fps.
        let bursts: Vec<f64> = (0..60)
            .map(|n| f64::from(n / 5) + f64::from(n % 5) / 60.0)
            .collect();
        assert_eq!(rate_of(bursts), 0.0);
        assert_eq!(rate_of(vec![0.0, 1.0, 2.0]), 0.0, "too few to tell");
    }
}
