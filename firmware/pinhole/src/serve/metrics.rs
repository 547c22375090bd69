//! `/metrics` for several cameras: each stream's Prometheus text gets a `stream="NAME"` label on
//! every sample, and the families are merged so each `# HELP`/`# TYPE` pair appears once, as
//! the exposition format requires. With one camera the text is passed through unlabelled, so a
//! single-camera device keeps the plain metric names.

use std::fmt::Write as _;

/// One metric family: its comment lines and its sample lines, in order of appearance.
#[derive(Debug, Default)]
struct Family {
    name: String,
    comments: Vec<String>,
    samples: Vec<String>,
}

/// Merges per-stream Prometheus texts (`(stream name, text)`) into one exposition. Lines that
/// are not comments or samples are dropped.
pub fn merge(streams: &[(&str, String)]) -> String {
    if let [(_, text)] = streams {
        return text.clone();
    }
    let mut families: Vec<Family> = Vec::new();
    for (name, text) in streams {
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                let fam = rest.split(' ').next().unwrap_or_default();
                let f = family(&mut families, fam);
                if !f.comments.iter().any(|c| c == line) {
                    f.comments.push(line.to_string());
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let metric_end = line.find(['{', ' ']).unwrap_or(line.len());
            let metric = &line[..metric_end];
            let labelled = with_label(line, metric_end, name);
            let fam = family_of(&families, metric).unwrap_or(metric).to_string();
            family(&mut families, &fam).samples.push(labelled);
        }
    }
    let mut out = String::new();
    for f in &families {
        for c in &f.comments {
            let _ = writeln!(out, "{c}");
        }
        for s in &f.samples {
            let _ = writeln!(out, "{s}");
        }
    }
    out
}

fn family<'a>(families: &'a mut Vec<Family>, name: &str) -> &'a mut Family {
    let i = match families.iter().position(|f| f.name == name) {
        Some(i) => i,
        None => {
            families.push(Family {
                name: name.to_string(),
                ..Family::default()
            });
            families.len() - 1
        }
    };
    &mut families[i]
}

/// The family a sample belongs to: histograms and summaries name their samples
/// `FAMILY_bucket`, `FAMILY_sum`, `FAMILY_count`.
fn family_of<'a>(families: &'a [Family], metric: &str) -> Option<&'a str> {
    families
        .iter()
        .find(|f| {
            f.name == metric
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| metric.strip_suffix(suffix) == Some(f.name.as_str()))
        })
        .map(|f| f.name.as_str())
}

/// `name{a="b"} v` → `name{stream="S",a="b"} v`; `name v` → `name{stream="S"} v`.
fn with_label(line: &str, metric_end: usize, stream: &str) -> String {
    let (metric, rest) = line.split_at(metric_end);
    let value = escape(stream);
    match rest.strip_prefix('{') {
        Some(labels) if labels.starts_with('}') => {
            format!("{metric}{{stream=\"{value}\"{labels}")
        }
        Some(labels) => format!("{metric}{{stream=\"{value}\",{labels}"),
        None => format!("{metric}{{stream=\"{value}\"}}{rest}"),
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "# HELP pinhole_viewers Open streams.\n# TYPE pinhole_viewers gauge\npinhole_viewers 2\n\
        # HELP pinhole_hls_refused_total Refused.\n# TYPE pinhole_hls_refused_total counter\n\
        pinhole_hls_refused_total{reason=\"busy\"} 1\npinhole_hls_refused_total{reason=\"gone\"} 0\n";

    #[test]
    fn one_stream_is_passed_through_without_labels() {
        assert_eq!(merge(&[("cam", A.to_string())]), A);
    }

    #[test]
    fn several_streams_get_a_label_and_each_family_is_described_once() {
        let b = A.replace("pinhole_viewers 2", "pinhole_viewers 5");
        let out = merge(&[("front", A.to_string()), ("garage", b)]);
        assert_eq!(out.matches("# HELP pinhole_viewers ").count(), 1, "{out}");
        assert_eq!(out.matches("# TYPE pinhole_hls_refused_total ").count(), 1);
        assert!(
            out.contains("pinhole_viewers{stream=\"front\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("pinhole_viewers{stream=\"garage\"} 5\n"),
            "{out}"
        );
        assert!(out.contains("pinhole_hls_refused_total{stream=\"garage\",reason=\"busy\"} 1\n"));
        // a family's samples follow its description, with no other family in between
        let help = out
            .find("# HELP pinhole_hls_refused_total")
            .unwrap_or(usize::MAX);
        let first = out.find("pinhole_hls_refused_total{").unwrap_or(0);
        let viewers = out
            .find("pinhole_viewers{stream=\"garage\"}")
            .unwrap_or(usize::MAX);
        assert!(viewers < help && help < first, "{out}");
    }

    #[test]
    fn labels_are_escaped_and_histogram_samples_stay_with_their_family() {
        let h = "# TYPE lat histogram\nlat_bucket{le=\"0.1\"} 3\nlat_sum 0.2\nlat_count 3\n";
        let out = merge(&[("a\"b", h.to_string()), ("c", h.to_string())]);
        assert_eq!(out.matches("# TYPE lat histogram").count(), 1);
        assert!(
            out.contains("lat_bucket{stream=\"a\\\"b\",le=\"0.1\"} 3"),
            "{out}"
        );
        assert!(out.contains("lat_count{stream=\"c\"} 3"), "{out}");
        let last_comment = out.rfind('#').unwrap_or(0);
        assert!(last_comment < out.find("lat_bucket").unwrap_or(0));
    }
}
