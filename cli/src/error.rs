//! The one error kind the CLI tells apart: a usage error found after
//! parsing, which exits with code 2 like clap's own.

/// A usage error (exit code 2) found after parsing.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}
