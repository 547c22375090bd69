//! The daemon's one error kind: what kind of failure a source (and, later, a request) met. The
//! kind decides what happens next — how soon a source is tried again — and what `/api/status`
//! says; the text beside it says what exactly went wrong.

use serde::Serialize;

/// What kind of failure it was. Shown in `/api/status` as `source.error_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// It may work on the next try: a reset or refused connection, a command that exited, a
    /// stall. Retried quickly (the camera that returns is back on screen within 2 s).
    Transient,
    /// The camera refused the credentials (RTSP `401 Unauthorized`). Retried slowly: the
    /// password will not fix itself, and cameras lock an account out after a few wrong tries.
    Credentials,
    /// The configuration cannot work as written (a source this build lacks, a bad pipeline
    /// description). Retried slowly, in case what it names appears.
    Configuration,
    /// The camera offers nothing pinhole can stream (no H.264). Retried slowly.
    Unsupported,
    /// Shutdown asked the source to stop: not a failure, never retried.
    Stopped,
}

impl ErrorKind {
    /// The name `/api/status` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Credentials => "credentials",
            ErrorKind::Configuration => "configuration",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialize_as_their_status_names() {
        for k in [
            ErrorKind::Transient,
            ErrorKind::Credentials,
            ErrorKind::Configuration,
            ErrorKind::Unsupported,
            ErrorKind::Stopped,
        ] {
            assert_eq!(
                serde_json::to_string(&k).ok(),
                Some(format!("\"{}\"", k.as_str()))
            );
        }
    }
}
