//! The `errortype` of a failed or cancelled command.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// A machine-readable failure category. The runtime's own are variants; a handler may name
/// its own, which travel as [`ErrorType::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// The command's deadline passed before or while it ran.
    DeadlineExceeded,
    /// The handler returned an error.
    HandlerError,
    /// The handler panicked.
    Panicked,
    /// The entry could not be decoded.
    Malformed,
    /// The command was cancelled.
    Canceled,
    /// The command was delivered `maxattempts` times without completing.
    MaxAttemptsExceeded,
    /// The agent has no handler for this command's `type`.
    UnknownType,
    /// Any other category a handler chose.
    Other(String),
}

impl ErrorType {
    /// The wire name, in snake case.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorType::DeadlineExceeded => "deadline_exceeded",
            ErrorType::HandlerError => "handler_error",
            ErrorType::Panicked => "panicked",
            ErrorType::Malformed => "malformed",
            ErrorType::Canceled => "canceled",
            ErrorType::MaxAttemptsExceeded => "max_attempts_exceeded",
            ErrorType::UnknownType => "unknown_type",
            ErrorType::Other(other) => other,
        }
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorType {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "deadline_exceeded" => ErrorType::DeadlineExceeded,
            "handler_error" => ErrorType::HandlerError,
            "panicked" => ErrorType::Panicked,
            "malformed" => ErrorType::Malformed,
            "canceled" => ErrorType::Canceled,
            "max_attempts_exceeded" => ErrorType::MaxAttemptsExceeded,
            "unknown_type" => ErrorType::UnknownType,
            other => ErrorType::Other(other.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "deadline_exceeded",
            "handler_error",
            "panicked",
            "malformed",
            "canceled",
            "max_attempts_exceeded",
            "unknown_type",
            "budget_exceeded",
        ] {
            assert_eq!(name.parse::<ErrorType>().unwrap().as_str(), name);
        }
    }
}
