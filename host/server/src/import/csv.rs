//! A small CSV reader (RFC 4180): fields separated by commas, records by LF or CRLF; a field
//! in double quotes may hold commas, line breaks and doubled quotes. Fields without quotes are
//! borrowed from the text. Lenient where the data is: text after a closing quote is kept,
//! and an unterminated quote runs to the end of the text.

use std::borrow::Cow;

/// One record and the line of the text it starts on (1-based).
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub line: usize,
    pub fields: Vec<Cow<'a, str>>,
}

/// The records of `text`, in order. Empty lines are no records.
pub struct Records<'a> {
    text: &'a str,
    position: usize,
    line: usize,
}

impl<'a> Records<'a> {
    pub fn new(text: &'a str) -> Records<'a> {
        let position = if text.starts_with('\u{feff}') { 3 } else { 0 };
        Records {
            text,
            position,
            line: 1,
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        let bytes = self.text.as_bytes();
        // skip empty lines
        while self.position < bytes.len()
            && (bytes[self.position] == b'\n' || bytes[self.position] == b'\r')
        {
            if bytes[self.position] == b'\n' {
                self.line += 1;
            }
            self.position += 1;
        }
        if self.position >= bytes.len() {
            return None;
        }
        let line = self.line;
        let mut fields = Vec::with_capacity(8);
        loop {
            let (field, end) = self.field();
            fields.push(field);
            match bytes.get(end) {
                Some(b',') => self.position = end + 1,
                Some(b'\r') if bytes.get(end + 1) == Some(&b'\n') => {
                    self.position = end + 2;
                    self.line += 1;
                    break;
                }
                Some(b'\n') => {
                    self.position = end + 1;
                    self.line += 1;
                    break;
                }
                // a lone CR ends the field but not the record
                Some(_) => self.position = end + 1,
                None => {
                    self.position = end;
                    break;
                }
            }
        }
        Some(Record { line, fields })
    }
}

impl<'a> Records<'a> {
    /// The field at the current position and the index of the byte after it (a separator or
    /// the end of the text).
    fn field(&mut self) -> (Cow<'a, str>, usize) {
        let text = self.text;
        let bytes = text.as_bytes();
        let start = self.position;
        if bytes.get(start) != Some(&b'"') {
            let end = bytes[start..]
                .iter()
                .position(|byte| matches!(byte, b',' | b'\n' | b'\r'))
                .map_or(bytes.len(), |offset| start + offset);
            return (Cow::Borrowed(&text[start..end]), end);
        }
        let mut value = String::new();
        let mut position = start + 1;
        loop {
            match bytes[position..].iter().position(|byte| *byte == b'"') {
                None => {
                    value.push_str(&text[position..]);
                    self.line += text[position..].matches('\n').count();
                    return (Cow::Owned(value), bytes.len());
                }
                Some(offset) => {
                    let quote = position + offset;
                    value.push_str(&text[position..quote]);
                    self.line += text[position..quote].matches('\n').count();
                    if bytes.get(quote + 1) == Some(&b'"') {
                        value.push('"');
                        position = quote + 2;
                        continue;
                    }
                    // after the closing quote: up to the separator, kept as it is
                    let after = quote + 1;
                    let end = bytes[after..]
                        .iter()
                        .position(|byte| matches!(byte, b',' | b'\n' | b'\r'))
                        .map_or(bytes.len(), |offset| after + offset);
                    value.push_str(&text[after..end]);
                    return (Cow::Owned(value), end);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &str) -> Vec<(usize, Vec<String>)> {
        Records::new(text)
            .map(|record| {
                (
                    record.line,
                    record.fields.into_iter().map(Cow::into_owned).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn plain_quoted_and_empty_fields() {
        assert_eq!(
            records("a,b,c\n1,\"x, y\",\n\"say \"\"hi\"\"\",2,3\r\n"),
            vec![
                (1, vec!["a".into(), "b".into(), "c".into()]),
                (2, vec!["1".into(), "x, y".into(), "".into()]),
                (3, vec!["say \"hi\"".into(), "2".into(), "3".into()]),
            ]
        );
    }

    #[test]
    fn line_breaks_inside_quotes_and_no_final_newline() {
        assert_eq!(
            records("\u{feff}\"two\nlines\",x\n\nlast,é"),
            vec![
                (1, vec!["two\nlines".into(), "x".into()]),
                (4, vec!["last".into(), "é".into()]),
            ]
        );
    }

    #[test]
    fn unterminated_quote_runs_to_the_end() {
        assert_eq!(
            records("a,\"b,c\nd"),
            vec![(1, vec!["a".into(), "b,c\nd".into()])]
        );
    }
}
