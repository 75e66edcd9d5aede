//! A YAML document as a tree that remembers the line of every node, so that each
//! finding can point at the line to fix. Built from yaml-rust2's event parser
//! without recursion, with a nesting limit: hostile input cannot exhaust the stack.

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::Marker,
};

/// Deepest nesting accepted; a NodeConfig needs fewer than ten levels.
pub const MAX_DEPTH: usize = 64;

/// A node of a YAML document.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A scalar (plain or quoted; not interpreted).
    Scalar {
        /// The text.
        value: String,
        /// Whether it was quoted (`"…"`, `'…'`, block scalars).
        quoted: bool,
        /// 1-based line.
        line: usize,
    },
    /// A sequence.
    Sequence {
        /// The items.
        items: Vec<Node>,
        /// 1-based line.
        line: usize,
    },
    /// A mapping with scalar keys (other keys are kept as their text).
    Mapping {
        /// `(key, key line, value)` in document order.
        entries: Vec<(String, usize, Node)>,
        /// 1-based line.
        line: usize,
    },
    /// An alias (`*name`), not resolved.
    Alias {
        /// 1-based line.
        line: usize,
    },
}

impl Node {
    /// The line the node starts on.
    pub fn line(&self) -> usize {
        match self {
            Self::Scalar { line, .. }
            | Self::Sequence { line, .. }
            | Self::Mapping { line, .. }
            | Self::Alias { line } => *line,
        }
    }

    /// The value of `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Self::Mapping { entries, .. } => entries
                .iter()
                .rev() // a repeated key: the last one wins, as in most loaders
                .find(|(k, _, _)| k == key)
                .map(|(_, _, v)| v),
            _ => None,
        }
    }

    /// The text of a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// A short name of the node's kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Scalar { .. } => "a scalar",
            Self::Sequence { .. } => "a list",
            Self::Mapping { .. } => "a mapping",
            Self::Alias { .. } => "an alias",
        }
    }
}

/// Why a document could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses every document of `text`.
pub fn parse(text: &str) -> Result<Vec<Node>, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|err| YamlError {
        line: err.marker().line(),
        message: err.info().to_owned(),
    })?;
    match builder.too_deep {
        Some(line) => Err(YamlError {
            line,
            message: format!("nesting deeper than {MAX_DEPTH} levels"),
        }),
        None => Ok(builder.documents),
    }
}

/// A container being filled, with the key waiting for its value (mappings).
enum Open {
    Sequence(Vec<Node>, usize),
    Mapping(Vec<(String, usize, Node)>, Option<(String, usize)>, usize),
}

#[derive(Default)]
struct Builder {
    documents: Vec<Node>,
    stack: Vec<Open>,
    /// Set at the first node beyond [`MAX_DEPTH`]; deeper content is dropped.
    too_deep: Option<usize>,
    /// Levels opened beyond the limit and not yet closed.
    ignored: usize,
}

impl Builder {
    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Open::Sequence(items, _)) => items.push(node),
            Some(Open::Mapping(entries, pending, _)) => match pending.take() {
                Some((key, line)) => entries.push((key, line, node)),
                None => {
                    let key = match &node {
                        Node::Scalar { value, .. } => value.clone(),
                        other => format!("<{}>", other.kind()),
                    };
                    *pending = Some((key, node.line()));
                }
            },
        }
    }

    fn open(&mut self, container: Open, line: usize) {
        if self.ignored > 0 || self.stack.len() >= MAX_DEPTH {
            self.too_deep.get_or_insert(line);
            self.ignored += 1;
        } else {
            self.stack.push(container);
        }
    }

    fn close(&mut self) {
        if self.ignored > 0 {
            self.ignored -= 1;
            return;
        }
        let node = match self.stack.pop() {
            Some(Open::Sequence(items, line)) => Node::Sequence { items, line },
            Some(Open::Mapping(entries, _, line)) => Node::Mapping { entries, line },
            None => return,
        };
        self.push(node);
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::Scalar(value, style, _, _) if self.ignored == 0 => self.push(Node::Scalar {
                value,
                quoted: style != yaml_rust2::scanner::TScalarStyle::Plain,
                line,
            }),
            Event::Alias(_) if self.ignored == 0 => self.push(Node::Alias { line }),
            Event::SequenceStart(..) => self.open(Open::Sequence(Vec::new(), line), line),
            Event::MappingStart(..) => self.open(Open::Mapping(Vec::new(), None, line), line),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_lookups() {
        let docs = parse("a: 1\nb:\n  c: \"x\"\n  d: [1, 2]\n").unwrap();
        let root = &docs[0];
        assert_eq!(root.get("a").unwrap().as_str(), Some("1"));
        let c = root.get("b").unwrap().get("c").unwrap();
        assert_eq!((c.as_str(), c.line()), (Some("x"), 3));
        assert!(matches!(c, Node::Scalar { quoted: true, .. }));
        assert!(
            matches!(root.get("b").unwrap().get("d"), Some(Node::Sequence { items, .. }) if items.len() == 2)
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        // Beyond the tree's own limit…
        let text = "[".repeat(100) + &"]".repeat(100);
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("deeper than 64"), "{err}");
        // …and far beyond, where the parser's recursion limit answers first.
        let text = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(parse(&text).is_err());
    }

    #[test]
    fn syntax_errors_have_lines() {
        let err = parse("a: 1\nb: [1,\n").unwrap_err();
        assert!(err.line >= 2, "{err}");
    }
}
