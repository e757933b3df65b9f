//! The answers of the plex.tv-compatible API: one element tree, written as XML (the default) or as
//! JSON when the client sends `Accept: application/json`.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An attribute's value: written as text in XML (booleans as `1`/`0`, as plex.tv does), and typed
/// in JSON (numbers as numbers, booleans as booleans, `null`), as plex.tv's JSON answers are.
#[derive(Debug, Clone)]
pub enum Value {
    Text(String),
    Number(i64),
    Bool(bool),
    Null,
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&String> for Value {
    fn from(text: &String) -> Self {
        Self::Text(text.clone())
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Self::Bool(value)
    }
}

macro_rules! numbers {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Self {
                Self::Number(i64::try_from(n).unwrap_or(i64::MAX))
            }
        }
    )*};
}
numbers!(i32, i64, u16, u32, u64, usize);

impl Value {
    fn write_xml(&self, out: &mut String) {
        match self {
            Self::Text(text) => escape_into(text, out),
            Self::Number(n) => out.push_str(&n.to_string()),
            Self::Bool(b) => out.push(if *b { '1' } else { '0' }),
            Self::Null => {}
        }
    }
}

impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::Number(n) => serializer.serialize_i64(*n),
            Self::Bool(b) => serializer.serialize_bool(*b),
            Self::Null => serializer.serialize_none(),
        }
    }
}

/// An element with attributes and children, in the order they were added.
#[derive(Debug, Clone, Default)]
pub struct Element {
    name: &'static str,
    attributes: Vec<(&'static str, Value)>,
    children: Vec<Element>,
    /// Names of children that are a list in JSON even when there is one of them, or none.
    lists: Vec<&'static str>,
    /// In JSON this element is the array of its children (`connections`, `roles`, a top-level list).
    array: bool,
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

    /// An element whose JSON form is the array of its children: `<roles/>` is `"roles": []`, and an
    /// answer that is such an element is a top-level JSON array.
    pub fn array(name: &'static str, items: impl IntoIterator<Item = Element>) -> Self {
        Self { name, children: items.into_iter().collect(), array: true, ..Self::default() }
    }

    pub fn attr(mut self, name: &'static str, value: impl Into<Value>) -> Self {
        self.attributes.push((name, value.into()));
        self
    }

    /// A boolean: `1` or `0` in XML, `true` or `false` in JSON.
    pub fn flag(self, name: &'static str, value: bool) -> Self {
        self.attr(name, Value::Bool(value))
    }

    pub fn opt(self, name: &'static str, value: Option<impl Into<Value>>) -> Self {
        match value {
            Some(value) => self.attr(name, value),
            None => self,
        }
    }

    pub fn child(mut self, child: Element) -> Self {
        self.children.push(child);
        self
    }

    /// Children of one name that JSON writes as a list, whatever their number.
    pub fn list(mut self, name: &'static str, items: impl IntoIterator<Item = Element>) -> Self {
        self.lists.push(name);
        self.children.extend(items);
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
            value.write_xml(out);
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

    /// The XML document: a declaration line, then the element on one line (the media server
    /// container's claim script reads the token with a line-based `sed`).
    pub fn to_xml(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        self.write_xml(&mut out);
        out.push('\n');
        out
    }
}

/// The JSON form: attributes as typed fields, children grouped under their element name (a list
/// when there are several, or when the name was added with [`Element::list`]). Written straight to
/// the response body, without an intermediate `serde_json::Value`: plex.tv clients fetch the user
/// element on every start and every ping.
impl serde::Serialize for Element {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if self.array {
            return serializer.collect_seq(&self.children);
        }
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in &self.attributes {
            map.serialize_entry(name, value)?;
        }
        for (at, child) in self.children.iter().enumerate() {
            if self.children[..at].iter().any(|earlier| earlier.name == child.name) {
                continue;
            }
            let several = self.children[at + 1..].iter().any(|c| c.name == child.name);
            if several || self.lists.contains(&child.name) {
                map.serialize_entry(child.name, &Siblings { children: &self.children[at..], name: child.name })?;
            } else {
                map.serialize_entry(child.name, child)?;
            }
        }
        for name in &self.lists {
            if !self.children.iter().any(|c| c.name == *name) {
                map.serialize_entry(name, &[] as &[Element])?;
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
            serde_json::json!({ "size": 2, "Device": [{ "id": "a" }, { "id": "b" }] })
        );
    }

    #[test]
    fn json_keeps_plex_types_and_lists_of_one() {
        let answer = Element::new("MediaContainer")
            .attr("size", 1_usize)
            .flag("owned", true)
            .attr("authToken", Value::Null)
            .list("Device", [Element::new("Device").attr("name", "den")])
            .list("Server", [])
            .child(Element::array("roles", []));
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            serde_json::json!({ "size": 1, "owned": true, "authToken": null, "Device": [{ "name": "den" }],
                "Server": [], "roles": [] })
        );
        assert_eq!(
            answer.to_xml(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"1\" owned=\"1\" authToken=\"\">\
             <Device name=\"den\"/><roles/></MediaContainer>\n"
        );
    }

    #[test]
    fn an_array_element_is_a_top_level_json_array() {
        let resources = Element::array("resources", [Element::new("resource").attr("name", "den")]);
        assert_eq!(serde_json::to_value(&resources).unwrap(), serde_json::json!([{ "name": "den" }]));
    }
}
