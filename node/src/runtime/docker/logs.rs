//! A container's output as a stream of lines, per source.

use std::collections::{BTreeMap, VecDeque};

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::LogsOptionsBuilder;
use futures::{Stream, StreamExt as _};

use super::DockerRuntime;
use crate::runtime::{LogLine, LogSource, LogStream, RuntimeError};

impl DockerRuntime {
    pub(super) async fn run_logs(
        &self,
        team: &str,
        name: &str,
        follow: bool,
        tail: Option<u64>,
    ) -> Result<LogStream, RuntimeError> {
        let info = self.resolve(team, name).await?;
        let id = info.id.unwrap_or_else(|| name.to_owned());
        let tail = tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
        let options = LogsOptionsBuilder::new()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        let inner = self.docker.logs(&id, Some(options)).boxed();
        let this = self.clone();
        let context = format!("reading the logs of {name}");
        let errors = move |e: DockerError| this.engine(context.clone(), e);
        Ok(log_lines(inner, errors).boxed())
    }
}

/// Splits raw output chunks into lines, per source.
#[derive(Debug, Default)]
struct LineSplitter {
    partial: BTreeMap<u8, Vec<u8>>,
}

fn source_key(s: LogSource) -> u8 {
    match s {
        LogSource::Stdout => 0,
        LogSource::Stderr => 1,
        LogSource::Console => 2,
    }
}

fn source_of(key: u8) -> LogSource {
    match key {
        0 => LogSource::Stdout,
        1 => LogSource::Stderr,
        _ => LogSource::Console,
    }
}

fn line_of(source: LogSource, mut bytes: Vec<u8>) -> LogLine {
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    LogLine {
        source,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

impl LineSplitter {
    fn push(&mut self, source: LogSource, chunk: &[u8], out: &mut VecDeque<LogLine>) {
        let buf = self.partial.entry(source_key(source)).or_default();
        buf.extend_from_slice(chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let rest = buf.split_off(i + 1);
            let mut line = std::mem::replace(buf, rest);
            line.pop();
            out.push_back(line_of(source, line));
        }
    }

    fn finish(&mut self, out: &mut VecDeque<LogLine>) {
        for (key, buf) in std::mem::take(&mut self.partial) {
            if !buf.is_empty() {
                out.push_back(line_of(source_of(key), buf));
            }
        }
    }
}

/// Turns the engine's output chunks into lines.
fn log_lines<S, F>(inner: S, errors: F) -> impl Stream<Item = Result<LogLine, RuntimeError>>
where
    S: Stream<Item = Result<LogOutput, DockerError>> + Unpin + Send + 'static,
    F: Fn(DockerError) -> RuntimeError + Send + 'static,
{
    struct State<S, F> {
        inner: S,
        errors: F,
        splitter: LineSplitter,
        ready: VecDeque<LogLine>,
        done: bool,
    }
    let state = State {
        inner,
        errors,
        splitter: LineSplitter::default(),
        ready: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(line) = st.ready.pop_front() {
                return Some((Ok(line), st));
            }
            if st.done {
                return None;
            }
            match st.inner.next().await {
                Some(Ok(chunk)) => {
                    let (source, bytes) = match &chunk {
                        LogOutput::StdOut { message } => (LogSource::Stdout, message),
                        LogOutput::StdErr { message } => (LogSource::Stderr, message),
                        LogOutput::Console { message } => (LogSource::Console, message),
                        LogOutput::StdIn { .. } => continue,
                    };
                    st.splitter.push(source, bytes, &mut st.ready);
                }
                Some(Err(e)) => {
                    st.done = true;
                    let err = (st.errors)(e);
                    return Some((Err(err), st));
                }
                None => {
                    st.done = true;
                    st.splitter.finish(&mut st.ready);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn output_chunks_split_into_lines_per_source() {
        let mut s = LineSplitter::default();
        let mut out = VecDeque::new();
        s.push(LogSource::Stdout, b"one\ntw", &mut out);
        s.push(LogSource::Stderr, b"err\r\n", &mut out);
        s.push(LogSource::Stdout, b"o\nthree", &mut out);
        s.finish(&mut out);
        let got: Vec<(LogSource, String)> = out.into_iter().map(|l| (l.source, l.text)).collect();
        assert_eq!(
            got,
            vec![
                (LogSource::Stdout, "one".to_owned()),
                (LogSource::Stderr, "err".to_owned()),
                (LogSource::Stdout, "two".to_owned()),
                (LogSource::Stdout, "three".to_owned()),
            ]
        );
    }
}
