//! Splitting a request body into one piece per reading, without parsing the readings yet.
//!
//! A JSON array is split at its top-level commas by a small byte scanner, so one bad element (a `NaN`, a number
//! that overflows, invalid UTF-8 inside a string) is rejected on its own while the rest of the request is kept.
//! NDJSON is split at newlines.

use thiserror::Error;

/// One element of the body, with its position in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    /// 0-based element index (JSON array) or 0-based line number (NDJSON).
    pub index: usize,
    /// The raw bytes of the element, trimmed of surrounding white space.
    pub bytes: &'a [u8],
}

/// Why a body could not be split at all (the whole request is refused).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BodyError {
    /// The body does not start with `[`.
    #[error("body is not a JSON array: it starts with {found:?} (send an array of readings, or NDJSON with Content-Type application/x-ndjson)")]
    NotAnArray {
        /// The first characters found.
        found: String,
    },
    /// The array is never closed.
    #[error("body is not valid JSON: the array is not terminated (truncated request?)")]
    Unterminated,
    /// Brackets do not match at the top level.
    #[error("body is not valid JSON: unbalanced brackets at byte {at}")]
    Unbalanced {
        /// Byte offset of the offending bracket.
        at: usize,
    },
    /// Something other than white space follows the closing bracket.
    #[error("body is not valid JSON: unexpected content after the array at byte {at}")]
    TrailingContent {
        /// Byte offset of the first unexpected byte.
        at: usize,
    },
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// Splits a JSON array into its elements. `[]` gives no pieces; an empty element (`[1,,2]`, a trailing comma)
/// gives an empty piece that validation rejects.
pub fn split_json_array(body: &[u8]) -> Result<Vec<Piece<'_>>, BodyError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    if body.get(start) != Some(&b'[') {
        let found = String::from_utf8_lossy(&body[start..body.len().min(start + 16)]).into_owned();
        return Err(BodyError::NotAnArray { found });
    }
    let mut pieces = Vec::new();
    let mut depth = 1usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut element_start = start + 1;
    let mut i = start + 1;
    while i < body.len() {
        let b = body[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => depth += 1,
                b']' | b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        if b != b']' {
                            return Err(BodyError::Unbalanced { at: i });
                        }
                        let last = trim(&body[element_start..i]);
                        if !last.is_empty() || !pieces.is_empty() {
                            pieces.push(Piece {
                                index: pieces.len(),
                                bytes: last,
                            });
                        }
                        if let Some(off) =
                            body[i + 1..].iter().position(|b| !b.is_ascii_whitespace())
                        {
                            return Err(BodyError::TrailingContent { at: i + 1 + off });
                        }
                        return Ok(pieces);
                    }
                }
                b',' if depth == 1 => {
                    pieces.push(Piece {
                        index: pieces.len(),
                        bytes: trim(&body[element_start..i]),
                    });
                    element_start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    Err(BodyError::Unterminated)
}

/// Splits NDJSON into its non-blank lines (`\n` or `\r\n`).
pub fn split_ndjson(body: &[u8]) -> Vec<Piece<'_>> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .map(|(index, line)| Piece {
            index,
            bytes: trim(line),
        })
        .filter(|p| !p.bytes.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(pieces: &[Piece<'_>]) -> Vec<String> {
        pieces
            .iter()
            .map(|p| String::from_utf8_lossy(p.bytes).into_owned())
            .collect()
    }

    #[test]
    fn array_splits_at_top_level_commas_only() {
        let body = br#" [ {"a":[1,2],"s":"x,]}\"y"} , 5 ,{"b":{}} ] "#;
        let pieces = split_json_array(body).expect("valid array");
        assert_eq!(
            texts(&pieces),
            vec![r#"{"a":[1,2],"s":"x,]}\"y"}"#, "5", r#"{"b":{}}"#]
        );
        assert_eq!(pieces[2].index, 2);
    }

    #[test]
    fn empty_array_has_no_pieces_and_empty_elements_are_kept_for_rejection() {
        assert_eq!(split_json_array(b"[ ]").expect("empty"), vec![]);
        assert_eq!(
            texts(&split_json_array(b"[1,,2,]").expect("splits")),
            vec!["1", "", "2", ""]
        );
    }

    #[test]
    fn invalid_utf8_and_nan_stay_inside_their_own_element() {
        let body = b"[{\"d\":\"\xff\"},{\"v\":NaN},{\"v\":1}]";
        let pieces = split_json_array(body).expect("splits");
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[1].bytes, b"{\"v\":NaN}");
    }

    #[test]
    fn whole_body_errors_are_named() {
        assert!(matches!(
            split_json_array(b"{\"a\":1}"),
            Err(BodyError::NotAnArray { .. })
        ));
        assert_eq!(
            split_json_array(b"[{\"a\":1}"),
            Err(BodyError::Unterminated)
        );
        assert_eq!(
            split_json_array(b"[1}"),
            Err(BodyError::Unbalanced { at: 2 })
        );
        assert_eq!(
            split_json_array(b"[1] x"),
            Err(BodyError::TrailingContent { at: 4 })
        );
        assert!(matches!(
            split_json_array(b""),
            Err(BodyError::NotAnArray { .. })
        ));
    }

    #[test]
    fn ndjson_skips_blank_lines_and_keeps_line_numbers() {
        let pieces = split_ndjson(b"{\"a\":1}\r\n\n  \n{\"b\":2}");
        assert_eq!(texts(&pieces), vec!["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!((pieces[0].index, pieces[1].index), (0, 3));
    }
}
