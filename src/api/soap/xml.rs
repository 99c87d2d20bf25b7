//! A small, defensive XML reader for SOAP requests.
//!
//! It builds a tree of elements and refuses what a SOAP request never needs and an attacker
//! likes: DOCTYPE and entity declarations (so no entity expansion or external entities), any
//! entity other than the five predefined ones, processing instructions, nesting deeper than
//! [`MAX_DEPTH`], more than [`MAX_ELEMENTS`] elements, and input that is not UTF-8.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::error::{ApiError, ApiResult};

pub const MAX_DEPTH: usize = 32;
pub const MAX_ELEMENTS: usize = 20_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    /// The prefix of the element's name, if any (`soapenv` of `soapenv:Body`).
    pub prefix: Option<String>,
    pub name: String,
    /// Attributes as (qualified name, value).
    pub attributes: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// An attribute by local name, whatever its prefix (`xsi:nil`, `nil`).
    pub fn attribute(&self, local: &str) -> Option<&str> {
        self.attributes.iter().find_map(|(name, value)| {
            let name_local = name.rsplit(':').next().unwrap_or(name);
            (name_local == local && !name.starts_with("xmlns")).then_some(value.as_str())
        })
    }

    /// The namespace URI bound to `prefix` (or the default namespace) on this element.
    pub fn namespace_declaration(&self, prefix: Option<&str>) -> Option<&str> {
        let wanted = match prefix {
            Some(p) => format!("xmlns:{p}"),
            None => "xmlns".to_string(),
        };
        self.attributes
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_nil(&self) -> bool {
        matches!(self.attribute("nil"), Some("true") | Some("1"))
    }

    pub fn child(&self, local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == local)
    }
}

fn malformed(what: impl std::fmt::Display) -> ApiError {
    ApiError::MalformedRequest(format!("the XML is not acceptable: {what}"))
}

fn predefined_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

fn open(start: &BytesStart<'_>) -> ApiResult<Element> {
    let qname = start.name().as_ref().to_string();
    let (prefix, name) = match qname.split_once(':') {
        Some((p, n)) => (Some(p.to_string()), n.to_string()),
        None => (None, qname),
    };
    let mut attributes = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(malformed)?;
        let key = attr.key.as_ref().to_string();
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(malformed)?
            .into_owned();
        attributes.push((key, value));
    }
    Ok(Element {
        prefix,
        name,
        attributes,
        ..Element::default()
    })
}

/// Parses a whole document and returns its root element.
pub fn parse(body: &[u8]) -> ApiResult<Element> {
    let text = std::str::from_utf8(body).map_err(|_| malformed("it is not UTF-8"))?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| malformed(format!("{e} at byte {}", reader.error_position())))?;
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let _ = start;
                return Err(malformed("content after the root element"));
            }
            Event::Start(start) => {
                count += 1;
                if stack.len() >= MAX_DEPTH {
                    return Err(malformed(format!("elements nest deeper than {MAX_DEPTH}")));
                }
                if count > MAX_ELEMENTS {
                    return Err(malformed(format!("more than {MAX_ELEMENTS} elements")));
                }
                stack.push(open(&start)?);
            }
            Event::Empty(start) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(malformed(format!("more than {MAX_ELEMENTS} elements")));
                }
                let element = open(&start)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::End(_) => {
                let element = stack.pop().ok_or_else(|| malformed("unbalanced end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => return Err(malformed("text outside the root element")),
                }
            }
            Event::CData(c) => {
                let content = c.xml10_content().into_owned();
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&content),
                    None => return Err(malformed("CDATA outside the root element")),
                }
            }
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref().map_err(malformed)? {
                    Some(ch) => ch,
                    None => {
                        let name: &str = &r;
                        predefined_entity(name).ok_or_else(|| {
                            malformed(format!("the entity &{name}; is not allowed"))
                        })?
                    }
                };
                match stack.last_mut() {
                    Some(el) => el.text.push(ch),
                    None => return Err(malformed("a reference outside the root element")),
                }
            }
            Event::DocType(_) => {
                return Err(malformed("DOCTYPE and entity declarations are not allowed"));
            }
            Event::PI(_) => return Err(malformed("processing instructions are not allowed")),
            Event::Decl(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed("the document ends inside an element"));
    }
    root.ok_or_else(|| malformed("the document is empty"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_elements_attributes_and_references() {
        let root = parse(
            br#"<?xml version="1.0"?><a:Env xmlns:a="urn:x"><b x="1&amp;2">t &lt; &#65;<c/></b></a:Env>"#,
        )
        .unwrap();
        assert_eq!(root.name, "Env");
        assert_eq!(root.prefix.as_deref(), Some("a"));
        assert_eq!(root.namespace_declaration(Some("a")), Some("urn:x"));
        let b = root.child("b").unwrap();
        assert_eq!(b.attribute("x"), Some("1&2"));
        assert_eq!(b.text, "t < A");
        assert_eq!(b.children.len(), 1);
    }

    #[test]
    fn refuses_doctype_entities_and_deep_nesting() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><a>&lol;</a>"#;
        assert!(parse(bomb).unwrap_err().to_string().contains("DOCTYPE"));
        assert!(
            parse(b"<a>&custom;</a>")
                .unwrap_err()
                .to_string()
                .contains("&custom;")
        );
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(
            parse(deep.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("deeper")
        );
        assert!(parse(b"<a><b></a>").is_err());
        assert!(parse(b"<a>").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"\xff\xfe").is_err());
    }
}
