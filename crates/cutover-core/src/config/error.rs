//! Located errors and warnings: every problem in a configuration file names
//! where it is (file, line, column, or the environment variable a value came
//! from), the key path, and what was expected.

use std::fmt;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Location {
    /// A position in a file: 1-based line and column.
    File {
        file: String,
        line: usize,
        column: usize,
    },
    /// A `CUTOVER_…` override: the value was not in the file.
    Override { variable: String },
}

impl Location {
    /// The 1-based line, when the value came from the file.
    pub fn line(&self) -> Option<usize> {
        match self {
            Location::File { line, .. } => Some(*line),
            Location::Override { .. } => None,
        }
    }

    /// The 1-based column, when the value came from the file.
    pub fn column(&self) -> Option<usize> {
        match self {
            Location::File { column, .. } => Some(*column),
            Location::Override { .. } => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { file, line, column } => write!(f, "{file}:{line}:{column}"),
            Location::Override { variable } => write!(f, "environment variable {variable}"),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not well-formed YAML.
    #[error("{location}: invalid YAML: {message}")]
    Syntax { location: Location, message: String },
    /// A value has the wrong type, is missing, or fails validation.
    #[error("{location}: {path}: {message}")]
    Invalid {
        location: Location,
        /// Dotted key path, e.g. `environments.production.deployment_window.start_time`.
        path: String,
        message: String,
    },
    /// `${VAR}` names a variable that is not set and gives no default.
    #[error(
        "{location}: {path}: environment variable {variable} is not set and has no default (write ${{{variable}:-default}} to give one)"
    )]
    MissingVariable {
        location: Location,
        path: String,
        variable: String,
    },
}

impl ConfigError {
    /// Where the problem is.
    pub fn location(&self) -> &Location {
        match self {
            ConfigError::Syntax { location, .. }
            | ConfigError::Invalid { location, .. }
            | ConfigError::MissingVariable { location, .. } => location,
        }
    }

    /// The key path, empty for syntax errors.
    pub fn path(&self) -> &str {
        match self {
            ConfigError::Syntax { .. } => "",
            ConfigError::Invalid { path, .. } | ConfigError::MissingVariable { path, .. } => path,
        }
    }
}

/// Something suspicious that does not stop the configuration from loading,
/// such as an unknown (probably misspelt) key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub location: Location,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.location, self.path, self.message)
    }
}
