//! Prometheus metrics as values: each part of pinhole describes its figures as typed
//! [`Family`]s (name, help, counter or gauge, samples with labels), and one renderer writes the
//! text exposition format 0.0.4 — every `# HELP`/`# TYPE` pair once, its samples right after it,
//! label values escaped. With several cameras each camera's families get a `stream="NAME"`
//! label on every sample ([`render_streams`]); with one the names stay plain, so a
//! single-camera device keeps the metric names it always had.
//!
//! A leaf: it imports nothing from the daemon (`tests/module-cycles`), so status, the gate and
//! the serving side can all describe their figures with it.

use std::fmt::Write as _;

/// The two metric types pinhole exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One sample: its labels (in order) and its value, already written as the text format wants
/// it (`3`, `0.125`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    labels: Vec<(&'static str, String)>,
    value: String,
}

/// One metric family.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<Sample>,
}

impl Family {
    pub fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Counter,
            samples: Vec::new(),
        }
    }

    pub fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Gauge,
            samples: Vec::new(),
        }
    }

    /// A family of one unlabelled sample.
    pub fn with(mut self, value: impl std::fmt::Display) -> Family {
        self.samples.push(Sample {
            labels: Vec::new(),
            value: value.to_string(),
        });
        self
    }

    /// One more sample with these labels.
    pub fn labelled(
        mut self,
        labels: &[(&'static str, &str)],
        value: impl std::fmt::Display,
    ) -> Family {
        self.samples.push(Sample {
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
            value: value.to_string(),
        });
        self
    }

    pub fn name(&self) -> &str {
        self.name
    }

    fn write_head(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind.as_str());
    }

    fn write_samples(&self, out: &mut String, stream: Option<&str>) {
        for s in &self.samples {
            out.push_str(self.name);
            let labels = stream
                .map(|v| ("stream", v))
                .into_iter()
                .chain(s.labels.iter().map(|(k, v)| (*k, v.as_str())));
            let mut first = true;
            for (k, v) in labels {
                out.push(if first { '{' } else { ',' });
                first = false;
                let _ = write!(out, "{k}=\"{}\"", escape(v));
            }
            if !first {
                out.push('}');
            }
            let _ = writeln!(out, " {}", s.value);
        }
    }
}

/// Families as the text exposition format, unlabelled.
pub fn render(out: &mut String, families: &[Family]) {
    for f in families {
        f.write_head(out);
        f.write_samples(out, None);
    }
}

/// Each camera's families (`(stream name, families)`): with one camera as [`render`] does;
/// with several, each family described once, followed by every camera's samples with
/// `stream="NAME"` first among their labels.
pub fn render_streams(out: &mut String, streams: &[(&str, Vec<Family>)]) {
    if let [(_, families)] = streams {
        render(out, families);
        return;
    }
    let mut names: Vec<&str> = Vec::new();
    for (_, families) in streams {
        for f in families {
            if !names.contains(&f.name()) {
                names.push(f.name());
            }
        }
    }
    for name in names {
        let mut described = false;
        for (stream, families) in streams {
            for f in families.iter().filter(|f| f.name() == name) {
                if !described {
                    f.write_head(out);
                    described = true;
                }
                f.write_samples(out, Some(stream));
            }
        }
    }
}

/// A label value: backslash, double quote and newline escaped (exposition format 0.0.4).
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families(viewers: u64) -> Vec<Family> {
        vec![
            Family::gauge("pinhole_viewers", "Open streams.").with(viewers),
            Family::counter("pinhole_hls_refused_total", "Refused.")
                .labelled(&[("reason", "busy")], 1)
                .labelled(&[("reason", "gone")], 0),
        ]
    }

    const A: &str = "# HELP pinhole_viewers Open streams.\n# TYPE pinhole_viewers gauge\npinhole_viewers 2\n\
        # HELP pinhole_hls_refused_total Refused.\n# TYPE pinhole_hls_refused_total counter\n\
        pinhole_hls_refused_total{reason=\"busy\"} 1\npinhole_hls_refused_total{reason=\"gone\"} 0\n";

    #[test]
    fn one_stream_is_rendered_without_labels() {
        let mut out = String::new();
        render_streams(&mut out, &[("cam", families(2))]);
        assert_eq!(out, A);
    }

    #[test]
    fn several_streams_get_a_label_and_each_family_is_described_once() {
        let mut out = String::new();
        render_streams(&mut out, &[("front", families(2)), ("garage", families(5))]);
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
    fn label_values_are_escaped_and_a_family_without_samples_is_still_described() {
        let f = vec![
            Family::gauge("pinhole_source_error_info", "Error.")
                .labelled(&[("error", "a\"b\\c\nd")], 1),
            Family::gauge("pinhole_empty", "Nothing yet."),
        ];
        let mut out = String::new();
        render_streams(&mut out, &[("x\"y", f.clone()), ("z", f)]);
        assert!(
            out.contains(
                "pinhole_source_error_info{stream=\"x\\\"y\",error=\"a\\\"b\\\\c\\nd\"} 1\n"
            ),
            "{out}"
        );
        assert!(out.contains("# TYPE pinhole_empty gauge\n"), "{out}");
    }
}
