//! Manifest errors: each names the file, line and column, shows the line, and
//! says how to fix it (rendered by miette).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::app::did_you_mean;
use crate::app::{Source, display_path, line_col};

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

/// The longest manifest line shown under an error.
const MAX_SHOWN_LINE: usize = 4096;

/// One problem in a manifest.
#[derive(Debug, Clone)]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a place.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
    label: String,
    span: Option<Range<usize>>,
    source: Option<NamedSource<Arc<str>>>,
}

impl ManifestError {
    /// A problem at `span` of the manifest text.
    pub fn at(source: &Source, span: Range<usize>, message: impl Into<String>) -> ManifestError {
        let span = clamp(span, source.text.len());
        let line_start = source.text[..span.start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source.text[span.start..]
            .find('\n')
            .map_or(source.text.len(), |i| span.start + i);
        // A line this long cannot be shown usefully (and miette's renderer
        // panics on a label past column 65,535): the heading's line:column
        // says where.
        if line_end - line_start > MAX_SHOWN_LINE || span.len() > MAX_SHOWN_LINE {
            return ManifestError {
                file: source.path.clone(),
                position: Some(line_col(&source.text, span.start)),
                message: message.into(),
                help: None,
                label: String::new(),
                span: None,
                source: None,
            };
        }
        ManifestError {
            file: source.path.clone(),
            position: Some(line_col(&source.text, span.start)),
            message: message.into(),
            help: None,
            label: "here".into(),
            span: Some(span),
            source: Some(
                NamedSource::new(source.display_name(), source.text.clone()).with_language("toml"),
            ),
        }
    }

    /// A problem with the file as a whole (it cannot be read, say).
    pub fn file(path: &Path, message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: path.to_path_buf(),
            position: None,
            message: message.into(),
            help: None,
            label: String::new(),
            span: None,
            source: None,
        }
    }

    /// Adds how to fix it.
    pub fn help(&mut self, help: impl Into<String>) -> &mut ManifestError {
        self.help = Some(help.into());
        self
    }

    /// Sets the label under the highlighted span.
    pub fn label(&mut self, label: impl Into<String>) -> &mut ManifestError {
        self.label = label.into();
        self
    }

    /// `file:line:column` (or just the file).
    pub fn location(&self) -> String {
        match self.position {
            Some((line, col)) => format!("{}:{line}:{col}", display_path(&self.file)),
            None => display_path(&self.file),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)
    }
}

impl std::error::Error for ManifestError {}

impl Diagnostic for ManifestError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        None
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.span.clone()?;
        let label = LabeledSpan::new_with_span(
            Some(self.label.clone()),
            span.start..span.end.max(span.start + 1),
        );
        Some(Box::new(std::iter::once(label)))
    }
}

/// Every problem found in a manifest (and the manifests it nests), in file order.
#[derive(Debug, Clone, Default)]
pub struct ManifestErrors {
    /// The problems.
    pub errors: Vec<ManifestError>,
}

impl ManifestErrors {
    /// Records a problem.
    pub fn push(&mut self, error: ManifestError) {
        self.errors.push(error);
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Every problem rendered with its source line, for a terminal (`color`) or a log.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        };
        let handler = miette::GraphicalReportHandler::new_themed(theme).with_context_lines(1);
        let mut out = String::new();
        for error in &self.errors {
            if handler.render_report(&mut out, error).is_err() {
                out.push_str(&error.to_string());
            }
            out.push('\n');
        }
        out
    }
}

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ManifestErrors {}

impl From<ManifestError> for ManifestErrors {
    fn from(error: ManifestError) -> ManifestErrors {
        ManifestErrors {
            errors: vec![error],
        }
    }
}

fn clamp(span: Range<usize>, len: usize) -> Range<usize> {
    let start = span.start.min(len);
    start..span.end.clamp(start, len)
}
