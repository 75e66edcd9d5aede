//! How promptly the daemon reports a routing problem.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::{EVENT_TIMEOUT, two_uplinks_watched};

fn event_time(event: &Value) -> SystemTime {
    humantime::parse_rfc3339(event["ts"].as_str().expect("ts")).expect("RFC 3339 ts")
}

/// The detection latency of an equal-metric tie: from the `ip route` command to
/// the `finding_raised` event, over repeated trials (reported, not asserted: the
/// target is held by the benchmark).
#[test]
fn equal_metric_tie_is_reported_promptly() {
    let (bed, _pins, mut watch) = two_uplinks_watched((1024, 1000), &[]);
    let gw6 = bed.uplink("ens6").gw4.to_string();
    let mut latencies = Vec::new();
    for trial in 0..20 {
        let sent = SystemTime::now();
        bed.delete_default("ens6", &gw6, 1000).unwrap();
        bed.set_default("ens6", &gw6, 1024).unwrap();
        let raised = watch
            .wait_for("the tie", EVENT_TIMEOUT, |e| {
                e["event"] == "finding_raised"
                    && e["finding"]["kind"] == "equal_metric_default_routes"
                    && event_time(e) >= sent - Duration::from_millis(5)
            })
            .unwrap();
        let latency = event_time(&raised).duration_since(sent).unwrap_or_default();
        latencies.push(latency);
        bed.delete_default("ens6", &gw6, 1024).unwrap();
        bed.set_default("ens6", &gw6, 1000).unwrap();
        watch
            .wait_for("the tie to clear", EVENT_TIMEOUT, |e| {
                e["event"] == "finding_cleared" && event_time(e) >= sent
            })
            .unwrap();
        let _ = trial;
        // Drop the matched events so the next trial waits for new ones.
        watch.forget();
    }
    latencies.sort();
    println!(
        "tie → finding_raised: median {:?}, max {:?} over {} trials (includes the `ip` command)",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );
    watch.stop_cleanly().unwrap();
}
