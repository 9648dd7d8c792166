//! Errors in scenario files, rendered with file, line, column and the
//! offending text (rustc style, via `annotate-snippets`).

use std::ops::Range;
use std::path::{Path, PathBuf};

use annotate_snippets::{Level, Renderer, Snippet};

/// A problem at one place in a scenario file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// What was wrong and what was expected.
    pub message: String,
    /// The full report, with the source line and a caret.
    pub rendered: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.rendered)]
    Invalid(Box<Diagnostic>),
}

impl ScenarioError {
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            ScenarioError::Invalid(d) => Some(d),
            ScenarioError::Io { .. } => None,
        }
    }
}

/// Build the diagnostic for `span` of `source` (the whole file if `None`).
pub fn at(
    path: &Path,
    source: &str,
    span: Option<Range<usize>>,
    message: impl Into<String>,
) -> ScenarioError {
    let message = message.into();
    let span = span.unwrap_or(0..0);
    let start = span.start.min(source.len());
    let end = span.end.clamp(start, source.len());
    let before = &source[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = source[line_start..start].chars().count() + 1;
    let origin = path.display().to_string();
    let report = Level::Error.title(&message).snippet(
        Snippet::source(source)
            .line_start(1)
            .origin(&origin)
            .fold(true)
            .annotation(Level::Error.span(start..end).label("here")),
    );
    let rendered = Renderer::plain().render(report).to_string();
    ScenarioError::Invalid(Box::new(Diagnostic {
        path: path.to_path_buf(),
        line,
        column,
        message,
        rendered,
    }))
}
