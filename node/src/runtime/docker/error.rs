//! Engine errors turned into [`RuntimeError`]s that say what went wrong:
//! unreachable engine, registry refusals, port conflicts.

use bollard::errors::Error as DockerError;

use super::DockerRuntime;
use crate::runtime::RuntimeError;
use crate::runtime::common::error_chain;

impl DockerRuntime {
    /// Maps an engine error: a transport failure is [`RuntimeError::Unreachable`].
    pub(super) fn engine(&self, context: impl Into<String>, e: DockerError) -> RuntimeError {
        if is_transport_error(&e) {
            return RuntimeError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason: error_chain(&e),
            };
        }
        RuntimeError::Engine {
            context: context.into(),
            detail: engine_message(&e),
        }
    }

    pub(super) fn registry_error(&self, reference: &str, e: DockerError) -> RuntimeError {
        if is_transport_error(&e) {
            return self.engine(format!("checking {reference}"), e);
        }
        let detail = engine_message(&e);
        classify_registry_message(reference, detail)
    }

    pub(super) fn create_error(&self, container: &str, name: &str, e: DockerError) -> RuntimeError {
        match status_of(&e) {
            Some(409) => RuntimeError::NameInUse {
                kind: "container",
                name: name.to_owned(),
            },
            Some(400) => RuntimeError::InvalidConfig {
                container: container.to_owned(),
                reason: engine_message(&e),
            },
            _ => self.engine(format!("creating container {name}"), e),
        }
    }

    pub(super) fn start_error(&self, container: &str, name: &str, e: DockerError) -> RuntimeError {
        let detail = engine_message(&e);
        if is_port_conflict(&detail) {
            return RuntimeError::PortInUse {
                container: container.to_owned(),
                detail,
            };
        }
        self.engine(format!("starting container {name}"), e)
    }
}

pub(super) fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own message when there is one.
pub(super) fn engine_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        DockerError::DockerStreamError { error } => error.trim().to_owned(),
        other => error_chain(other),
    }
}

/// Failures to talk to the engine at all (as opposed to its answers).
fn is_transport_error(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::IOError { .. }
            | DockerError::HyperLegacyError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::RequestTimeoutError
            | DockerError::SocketNotFoundError(_)
    )
}

pub(super) fn is_port_conflict(detail: &str) -> bool {
    let lower = detail.to_ascii_lowercase();
    lower.contains("port is already allocated") || lower.contains("address already in use")
}

fn classify_registry_message(reference: &str, detail: String) -> RuntimeError {
    let lower = detail.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    let reference = reference.to_owned();
    if any(&[
        "no basic auth credentials",
        "unauthorized",
        "authentication required",
        "denied",
        "incorrect username or password",
    ]) {
        RuntimeError::RegistryAuth { reference, detail }
    } else if any(&[
        "manifest unknown",
        "not found",
        "name unknown",
        "does not exist",
        "invalid reference format",
    ]) {
        RuntimeError::ImageNotFound { reference, detail }
    } else if any(&[
        "connection refused",
        "no such host",
        "i/o timeout",
        "dial tcp",
        "network is unreachable",
        "server gave http response to https client",
        "tls:",
        "x509:",
        "timeout exceeded",
    ]) {
        RuntimeError::RegistryUnreachable { reference, detail }
    } else {
        RuntimeError::Pull { reference, detail }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn registry_messages_classify() {
        let c = |m: &str| classify_registry_message("r", m.to_owned());
        assert!(matches!(
            c("Head \"http://h/v2/x/manifests/1\": no basic auth credentials"),
            RuntimeError::RegistryAuth { .. }
        ));
        assert!(matches!(
            c("unauthorized: authentication required"),
            RuntimeError::RegistryAuth { .. }
        ));
        assert!(matches!(
            c("manifest unknown: manifest unknown"),
            RuntimeError::ImageNotFound { .. }
        ));
        assert!(matches!(
            c(
                "Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused"
            ),
            RuntimeError::RegistryUnreachable { .. }
        ));
        assert!(matches!(c("something else"), RuntimeError::Pull { .. }));
    }
}
