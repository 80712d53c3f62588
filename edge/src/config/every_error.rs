//! Every schema error of a TOML file at once, not only the first.
//!
//! A derived `Deserialize` stops at the first value it cannot convert. For a person fixing a file, one round per
//! mistake is tedious, so [`parse`] goes on: it blanks the offending entry (the array element, or the whole
//! `key = value`) with spaces, which keeps every byte offset, line and column of the rest, and parses again. An
//! error that only exists because of a blanked entry (the field it removed is now missing) ends the search, as
//! does an error it cannot locate. The first error is always the parser's own; later ones are what the parser
//! says about the untouched rest of the file.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml_edit::{ImDocument, Item, Table, Value};

/// At most this many errors are collected from one file.
const MAX_ERRORS: usize = 20;

/// Parses `text` as `F`, or returns every error found (at least one), in file order.
pub(crate) fn parse<F: DeserializeOwned>(text: &str) -> Result<F, Vec<toml::de::Error>> {
    let mut current = text.to_owned();
    let mut errors: Vec<toml::de::Error> = Vec::new();
    let mut blanked_keys: Vec<String> = Vec::new();
    while errors.len() < MAX_ERRORS {
        let error = match toml::from_str::<F>(&current) {
            Ok(parsed) if errors.is_empty() => return Ok(parsed),
            Ok(_) => break,
            Err(error) => error,
        };
        let missing = error.message().starts_with("missing field");
        if missing
            && blanked_keys
                .iter()
                .any(|key| error.message() == format!("missing field `{key}`"))
        {
            break;
        }
        let located = match error.span() {
            Some(span) if !missing => locate::<F>(&current, &span, &error),
            _ => None,
        };
        let Some((range, key)) = located else {
            errors.push(error);
            break;
        };
        errors.push(error);
        let next = blank(&current, range);
        if ImDocument::parse(next.as_str()).is_err() {
            break;
        }
        blanked_keys.extend(key);
        current = next;
    }
    Err(errors)
}

/// The bytes to blank for `error` at `span`, and the key removed with them (none for an array element).
fn locate<F: DeserializeOwned>(
    text: &str,
    span: &Range<usize>,
    error: &toml::de::Error,
) -> Option<(Range<usize>, Option<String>)> {
    if span.is_empty() {
        return None;
    }
    let doc = ImDocument::parse(text).ok()?;
    let culprit = |elements: &[Range<usize>]| culprit::<F>(text, elements, error);
    in_table(text, doc.as_table(), span, &culprit)
}

/// Which of an array's elements causes `error`: the parser names the whole array, so each element is blanked in
/// turn until the error goes away or changes. Elements are converted in order, so the first such is the one.
fn culprit<F: DeserializeOwned>(
    text: &str,
    elements: &[Range<usize>],
    error: &toml::de::Error,
) -> Option<Range<usize>> {
    elements.iter().find_map(|element| {
        let range = with_comma(text, element.clone());
        let same = match toml::from_str::<F>(&blank(text, range.clone())) {
            Ok(_) => false,
            Err(e) => e.message() == error.message() && e.span() == error.span(),
        };
        (!same).then_some(range)
    })
}

type Culprit<'a> = dyn Fn(&[Range<usize>]) -> Option<Range<usize>> + 'a;

fn in_table(
    text: &str,
    table: &Table,
    span: &Range<usize>,
    culprit: &Culprit<'_>,
) -> Option<(Range<usize>, Option<String>)> {
    for (name, item) in table.iter() {
        let (key, _) = table.get_key_value(name)?;
        match item {
            Item::Table(inner) => {
                if let Some(found) = in_table(text, inner, span, culprit) {
                    return Some(found);
                }
            }
            Item::ArrayOfTables(tables) => {
                if let Some(found) = tables.iter().find_map(|t| in_table(text, t, span, culprit)) {
                    return Some(found);
                }
            }
            Item::Value(value) => {
                let (Some(key_span), Some(value_span)) = (key.span(), value.span()) else {
                    continue;
                };
                let whole = key_span.start..value_span.end;
                if !contains(&whole, span) {
                    continue;
                }
                if let Value::Array(array) = value {
                    let elements: Vec<Range<usize>> =
                        array.iter().filter_map(Value::span).collect();
                    let element = match elements.iter().find(|element| contains(element, span)) {
                        Some(element) => Some(with_comma(text, element.clone())),
                        None if Some(span) == array.span().as_ref() => culprit(&elements),
                        None => None,
                    };
                    if let Some(element) = element {
                        return Some((element, None));
                    }
                }
                return Some((whole, Some(name.to_owned())));
            }
            Item::None => {}
        }
    }
    None
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// An array element's bytes and the comma that follows it, if one does (after white space).
fn with_comma(text: &str, element: Range<usize>) -> Range<usize> {
    let rest = text.get(element.end..).unwrap_or_default();
    let gap = rest.len() - rest.trim_start().len();
    if rest[gap..].starts_with(',') {
        element.start..element.end + gap + 1
    } else {
        element
    }
}

/// `text` with the bytes of `range` replaced by spaces, line breaks kept.
fn blank(text: &str, range: Range<usize>) -> String {
    text.char_indices()
        .map(|(at, c)| {
            if range.contains(&at) && c != '\n' && c != '\r' {
                " ".repeat(c.len_utf8())
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only parsed")]
    struct File {
        name: Small,
        #[serde(default)]
        names: Vec<Small>,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only parsed")]
    struct Inner {
        #[serde(default)]
        port: Option<u16>,
    }

    /// A string of at most three characters.
    #[derive(Debug, serde::Deserialize)]
    #[serde(try_from = "String")]
    struct Small(#[allow(dead_code, reason = "only parsed")] String);

    impl TryFrom<String> for Small {
        type Error = String;
        fn try_from(s: String) -> Result<Self, String> {
            if s.len() <= 3 {
                Ok(Self(s))
            } else {
                Err(format!("{s:?} is too long"))
            }
        }
    }

    fn messages(text: &str) -> Vec<String> {
        match parse::<File>(text) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.message().to_owned()).collect(),
        }
    }

    #[test]
    fn a_good_file_parses() {
        let file: File = parse("name = \"ab\"\nnames = [\"a\"]\n[inner]\nport = 1\n").unwrap();
        assert_eq!(file.names.len(), 1);
    }

    #[test]
    fn errors_in_elements_values_and_unknown_keys_are_all_reported_in_order() {
        let text = "name = \"ab\"\nnames = [\"a\", \"long\", \"b\", \"longer\"]\nbogus = 1\n[inner]\nport = 70000\nextra = true\n";
        let got = messages(text);
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(got[0].contains("\"long\" is too long"), "{got:?}");
        assert!(got[1].contains("\"longer\" is too long"), "{got:?}");
        assert!(got[2].contains("unknown field `bogus`"), "{got:?}");
        assert!(got[3].contains("70000"), "{got:?}");
        assert!(got[4].contains("unknown field `extra`"), "{got:?}");
    }

    #[test]
    fn later_errors_keep_the_original_lines() {
        let errors = parse::<File>("names = [\"long\"]\n\n\nname = \"toolong\"\n").unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[1].to_string().contains("line 4"), "{}", errors[1]);
    }

    #[test]
    fn a_required_value_that_was_wrong_is_not_reported_again_as_missing() {
        let got = messages("name = \"toolong\"\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("too long"), "{got:?}");
        // Missing from the start, it is reported.
        assert_eq!(messages("names = []\n"), vec!["missing field `name`"]);
    }

    #[test]
    fn a_syntax_error_is_the_one_error() {
        let errors = parse::<File>("name = \"ab\nnames = [\n").unwrap_err();
        assert_eq!(errors.len(), 1);
    }
}
