//! `/metrics` read by a real Prometheus text parser: the official Python
//! client's OpenMetrics parser (`pip install prometheus-client`), strict
//! about names, types, `_total` suffixes, histogram buckets and `# EOF`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

/// One sample: name, labels, value.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// Every sample in `text`; panics with the parser's complaint if it refuses it.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).expect("text written");
    drop(stdin);
    let out = child.wait_with_output().expect("the parser ends");
    assert!(
        out.status.success(),
        "the Prometheus parser refused the text:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

/// The value of the sample `name` with exactly `labels`, if present.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = (labels.iter())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (samples.iter())
        .find(|(n, l, _)| n == name && *l == want)
        .map(|(_, _, v)| *v)
}
