//! The answers of the plex.tv-compatible API: one element tree, written as XML (the default) or as
//! JSON when the client sends `Accept: application/json`.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An element with attributes and children, in the order they were added.
#[derive(Debug, Clone, Default)]
pub struct Element {
    name: &'static str,
    attributes: Vec<(&'static str, String)>,
    children: Vec<Element>,
    text: Option<String>,
}

impl Element {
    pub fn new(name: &'static str) -> Self {
        Self { name, ..Self::default() }
    }

    /// An element that will have about `attributes` attributes (the user element has thirty).
    pub fn with_capacity(name: &'static str, attributes: usize) -> Self {
        Self { name, attributes: Vec::with_capacity(attributes), ..Self::default() }
    }

    pub fn attr(mut self, name: &'static str, value: impl ToString) -> Self {
        self.attributes.push((name, value.to_string()));
        self
    }

    /// A boolean as plex.tv writes it: `1` or `0`.
    pub fn flag(self, name: &'static str, value: bool) -> Self {
        self.attr(name, if value { "1" } else { "0" })
    }

    pub fn opt(self, name: &'static str, value: Option<impl ToString>) -> Self {
        match value {
            Some(value) => self.attr(name, value),
            None => self,
        }
    }

    pub fn child(mut self, child: Element) -> Self {
        self.children.push(child);
        self
    }

    pub fn children(mut self, children: impl IntoIterator<Item = Element>) -> Self {
        self.children.extend(children);
        self
    }

    pub fn text(mut self, text: impl ToString) -> Self {
        self.text = Some(text.to_string());
        self
    }

    fn write_xml(&self, out: &mut String) {
        out.push('<');
        out.push_str(self.name);
        for (name, value) in &self.attributes {
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            escape_into(value, out);
            out.push('"');
        }
        if self.children.is_empty() && self.text.is_none() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        if let Some(text) = &self.text {
            escape_into(text, out);
        }
        for child in &self.children {
            child.write_xml(out);
        }
        out.push_str("</");
        out.push_str(self.name);
        out.push('>');
    }

    pub fn to_xml(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        self.write_xml(&mut out);
        out.push('\n');
        out
    }
}

/// The JSON form: attributes as fields, children grouped under their element name (a list when the
/// element is a list, such as `MediaContainer` or `resources`). Written straight to the response
/// body, without an intermediate `serde_json::Value`: plex.tv clients fetch the user element on
/// every start and every ping.
impl serde::Serialize for Element {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in &self.attributes {
            map.serialize_entry(name, value)?;
        }
        for (at, child) in self.children.iter().enumerate() {
            if self.children[..at].iter().any(|earlier| earlier.name == child.name) {
                continue;
            }
            if self.children[at + 1..].iter().any(|c| c.name == child.name) {
                map.serialize_entry(child.name, &Siblings { children: &self.children[at..], name: child.name })?;
            } else {
                map.serialize_entry(child.name, child)?;
            }
        }
        if let Some(text) = &self.text {
            map.serialize_entry("text", text)?;
        }
        map.end()
    }
}

/// The children of one name, written as a list.
struct Siblings<'a> {
    children: &'a [Element],
    name: &'static str,
}

impl serde::Serialize for Siblings<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.children.iter().filter(|c| c.name == self.name))
    }
}

fn escape_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\t' && c != '\n' && c != '\r' => {}
            c => out.push(c),
        }
    }
}

/// How the client wants its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

impl Format {
    pub fn of(headers: &HeaderMap) -> Self {
        let wants_json = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("application/json"));
        if wants_json {
            Self::Json
        } else {
            Self::Xml
        }
    }

    pub fn answer(self, status: StatusCode, element: &Element) -> Response {
        match self {
            Self::Json => {
                // Sized for a user element at once, rather than grown from axum's 128 bytes.
                let mut body = Vec::with_capacity(2048);
                match serde_json::to_writer(&mut body, element) {
                    Ok(()) => (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body)
                        .into_response(),
                    Err(err) => {
                        tracing::error!(error = %err, "cannot write a plex.tv element as JSON");
                        super::PlexError::new(self, StatusCode::INTERNAL_SERVER_ERROR, 1000, "internal error")
                            .into_response()
                    }
                }
            }
            Self::Xml => (
                status,
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"))],
                element.to_xml(),
            )
                .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_escaped_and_empty_elements_closed() {
        let user = Element::new("user").attr("title", "A \"quoted\" <b>&").child(Element::new("roles"));
        assert_eq!(
            user.to_xml(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<user title=\"A &quot;quoted&quot; &lt;b&gt;&amp;\"><roles/></user>\n"
        );
    }

    #[test]
    fn repeated_children_become_a_list_in_json() {
        let list = Element::new("MediaContainer")
            .attr("size", 2)
            .child(Element::new("Device").attr("id", "a"))
            .child(Element::new("Device").attr("id", "b"));
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            serde_json::json!({ "size": "2", "Device": [{ "id": "a" }, { "id": "b" }] })
        );
    }
}
