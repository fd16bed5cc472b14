//! NumPy `.npy` input for `larch vectors upsert`: the header of a 2-D float matrix, then its
//! rows one at a time.
//!
//! The format (NumPy's `numpy.lib.format`): the magic `\x93NUMPY`, a major and minor version
//! byte, the header's length (a little-endian `u16` in version 1, `u32` in versions 2 and 3),
//! then the header itself, a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 384), }` padded with spaces to
//! a newline. The data follows: `shape[0]` rows of `shape[1]` values each in C order.
//! Accepted: little-endian float32 (`<f4`) and float64 (`<f8`, converted to float32), C order,
//! two dimensions; anything else is refused naming what was found and what is expected.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, bail};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The element type of an accepted matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dtype {
    F32,
    F64,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
}

/// What a `.npy` header says about an accepted matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) dtype: Dtype,
    pub(crate) rows: u64,
    pub(crate) dimension: usize,
    /// Where the data starts: the magic, version, length and header bytes before it.
    pub(crate) data_offset: u64,
}

/// Parses a `.npy` header from the start of `reader`, leaving it at the first data byte.
pub(crate) fn read_header(reader: &mut impl Read) -> anyhow::Result<Header> {
    let mut preamble = [0u8; 8];
    reader
        .read_exact(&mut preamble)
        .context("not a .npy file: shorter than its magic and version")?;
    if &preamble[..6] != MAGIC {
        bail!("not a .npy file: it does not start with NumPy's magic \\x93NUMPY");
    }
    let (major, minor) = (preamble[6], preamble[7]);
    let (length, prefix) = match major {
        1 => {
            let mut bytes = [0u8; 2];
            reader
                .read_exact(&mut bytes)
                .context("truncated .npy header")?;
            (usize::from(u16::from_le_bytes(bytes)), 10)
        }
        2 | 3 => {
            let mut bytes = [0u8; 4];
            reader
                .read_exact(&mut bytes)
                .context("truncated .npy header")?;
            let length = usize::try_from(u32::from_le_bytes(bytes))
                .context(".npy header length does not fit in memory")?;
            (length, 12)
        }
        _ => {
            bail!(".npy format version {major}.{minor} is not supported; expected 1.0, 2.0 or 3.0")
        }
    };
    if length > 1 << 20 {
        bail!(".npy header claims {length} bytes; a real one is a few hundred");
    }
    let mut text = vec![0u8; length];
    reader
        .read_exact(&mut text)
        .context("truncated .npy header")?;
    let text = String::from_utf8(text).context(".npy header is not text")?;
    let mut header = parse_header(&text)?;
    header.data_offset = (prefix + length) as u64;
    Ok(header)
}

/// The dict of a `.npy` header, checked to describe a 2-D little-endian float matrix in C order.
fn parse_header(text: &str) -> anyhow::Result<Header> {
    let mut parser = Parser {
        text: text.trim_end().as_bytes(),
        at: 0,
    };
    let value = parser
        .value()
        .and_then(|value| {
            parser.space();
            if parser.at == parser.text.len() {
                Ok(value)
            } else {
                Err(format!("unexpected text at byte {}", parser.at))
            }
        })
        .map_err(|message| {
            anyhow::anyhow!(".npy header {text:?} is not a dict literal: {message}")
        })?;
    let Literal::Dict(entries) = value else {
        bail!(".npy header {text:?} is not a dict");
    };
    let field = |name: &str| {
        entries
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
            .with_context(|| format!(".npy header {text:?} has no '{name}'"))
    };
    let dtype = match field("descr")? {
        Literal::Str(descr) if descr == "<f4" => Dtype::F32,
        Literal::Str(descr) if descr == "<f8" => Dtype::F64,
        other => bail!(
            ".npy dtype {} is not supported; expected little-endian float32 ('<f4') or \
             float64 ('<f8')",
            other.show()
        ),
    };
    match field("fortran_order")? {
        Literal::Bool(false) => {}
        Literal::Bool(true) => bail!(
            ".npy array is in Fortran (column-major) order; expected C order (save \
             numpy.ascontiguousarray(a))"
        ),
        other => bail!(".npy fortran_order {} is not True or False", other.show()),
    }
    let shape = match field("shape")? {
        Literal::Tuple(items) => items
            .iter()
            .map(|item| match item {
                Literal::Int(n) => Ok(*n),
                other => Err(anyhow::anyhow!(
                    ".npy shape has {} where a size is expected",
                    other.show()
                )),
            })
            .collect::<anyhow::Result<Vec<u64>>>()?,
        other => bail!(".npy shape {} is not a tuple", other.show()),
    };
    let [rows, dimension] = shape[..] else {
        bail!(
            ".npy array has shape {} ({}-D); expected a 2-D array (rows, dimension)",
            Literal::Tuple(shape.iter().map(|&n| Literal::Int(n)).collect()).show(),
            shape.len()
        );
    };
    if dimension == 0 {
        bail!(".npy array has shape ({rows}, 0); rows need at least one value");
    }
    let dimension = usize::try_from(dimension).context(".npy dimension does not fit in memory")?;
    Ok(Header {
        dtype,
        rows,
        dimension,
        data_offset: 0,
    })
}

/// The Python literals a `.npy` header uses.
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Int(u64),
    Bool(bool),
    Tuple(Vec<Literal>),
    List(Vec<Literal>),
    Dict(Vec<(String, Literal)>),
}

impl Literal {
    /// The literal as Python would print it, for messages.
    fn show(&self) -> String {
        let join = |items: &[Literal]| {
            items
                .iter()
                .map(Literal::show)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Literal::Str(text) => format!("'{text}'"),
            Literal::Int(n) => n.to_string(),
            Literal::Bool(true) => "True".into(),
            Literal::Bool(false) => "False".into(),
            Literal::Tuple(items) if items.len() == 1 => format!("({},)", items[0].show()),
            Literal::Tuple(items) => format!("({})", join(items)),
            Literal::List(items) => format!("[{}]", join(items)),
            Literal::Dict(entries) => format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|(key, value)| format!("'{key}': {}", value.show()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A recursive-descent reader of the literal subset above.
struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn space(&mut self) {
        while self.text.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.text.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", byte as char, self.at))
        }
    }

    fn value(&mut self) -> Result<Literal, String> {
        match self.peek() {
            Some(b'{') => {
                self.at += 1;
                let mut entries = Vec::new();
                while self.peek() != Some(b'}') {
                    let Literal::Str(key) = self.value()? else {
                        return Err(format!(
                            "a dict key that is not a string at byte {}",
                            self.at
                        ));
                    };
                    self.expect(b':')?;
                    entries.push((key, self.value()?));
                    if self.peek() != Some(b'}') {
                        self.expect(b',')?;
                    }
                }
                self.at += 1;
                Ok(Literal::Dict(entries))
            }
            Some(open @ (b'(' | b'[')) => {
                self.at += 1;
                let close = if open == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                while self.peek() != Some(close) {
                    items.push(self.value()?);
                    if self.peek() != Some(close) {
                        self.expect(b',')?;
                    }
                }
                self.at += 1;
                Ok(if open == b'(' {
                    Literal::Tuple(items)
                } else {
                    Literal::List(items)
                })
            }
            Some(quote @ (b'\'' | b'"')) => {
                self.at += 1;
                let start = self.at;
                while self.text.get(self.at).is_some_and(|&b| b != quote) {
                    self.at += 1;
                }
                if self.at == self.text.len() {
                    return Err("an unterminated string".into());
                }
                let text = String::from_utf8_lossy(&self.text[start..self.at]).into_owned();
                self.at += 1;
                Ok(Literal::Str(text))
            }
            Some(b'0'..=b'9') => {
                let start = self.at;
                while self.text.get(self.at).is_some_and(u8::is_ascii_digit) {
                    self.at += 1;
                }
                // Python 2 era writers add an `L` to longs.
                if self.text.get(self.at) == Some(&b'L') {
                    self.at += 1;
                }
                let digits = std::str::from_utf8(&self.text[start..self.at])
                    .map_err(|e| e.to_string())?
                    .trim_end_matches('L');
                digits
                    .parse()
                    .map(Literal::Int)
                    .map_err(|e| format!("size {digits}: {e}"))
            }
            Some(_) => {
                let rest = &self.text[self.at..];
                for (word, value) in [(&b"True"[..], true), (&b"False"[..], false)] {
                    if rest.starts_with(word) {
                        self.at += word.len();
                        return Ok(Literal::Bool(value));
                    }
                }
                Err(format!("unexpected text at byte {}", self.at))
            }
            None => Err("it ends early".into()),
        }
    }
}

/// A `.npy` matrix read one row at a time through a buffer.
pub(crate) struct Rows {
    reader: BufReader<File>,
    header: Header,
    next: u64,
    bytes: Vec<u8>,
}

impl Rows {
    /// Opens `path`, checks its header and that the file holds every row the header promises.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Rows> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let length = file
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        let mut reader = BufReader::new(file);
        let header = read_header(&mut reader).with_context(|| path.display().to_string())?;
        let row_bytes = header.dimension * header.dtype.size();
        let expected = (row_bytes as u64)
            .checked_mul(header.rows)
            .and_then(|data| data.checked_add(header.data_offset))
            .with_context(|| format!("{}: .npy shape is too large", path.display()))?;
        if length < expected {
            bail!(
                "{}: truncated .npy file: {length} bytes, its header's shape ({}, {}) needs {expected}",
                path.display(),
                header.rows,
                header.dimension
            );
        }
        Ok(Rows {
            reader,
            bytes: vec![0; row_bytes],
            header,
            next: 0,
        })
    }

    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    /// Moves to row `row` (0-based) without reading the rows before it.
    pub(crate) fn seek(&mut self, row: u64) -> anyhow::Result<()> {
        let row = row.min(self.header.rows);
        let offset = self.header.data_offset + row * self.bytes.len() as u64;
        self.reader
            .seek(SeekFrom::Start(offset))
            .context("cannot seek in the .npy file")?;
        self.next = row;
        Ok(())
    }

    /// The next row's index and values as float32, or `None` after the last row.
    pub(crate) fn next_row(&mut self) -> anyhow::Result<Option<(u64, Vec<f32>)>> {
        if self.next == self.header.rows {
            return Ok(None);
        }
        let row = self.next;
        self.reader
            .read_exact(&mut self.bytes)
            .with_context(|| format!("cannot read row {row} of the .npy file"))?;
        self.next += 1;
        let values = match self.header.dtype {
            Dtype::F32 => self
                .bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F64 => self
                .bytes
                .chunks_exact(8)
                .map(|b| {
                    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                })
                .collect(),
        };
        Ok(Some((row, values)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.npy` file's bytes as NumPy writes them: version `major`, header padded to 64 bytes.
    fn npy(major: u8, dict: &str, data: &[u8]) -> Vec<u8> {
        let prefix = if major == 1 { 10 } else { 12 };
        let mut header = dict.to_owned();
        while !(prefix + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = MAGIC.to_vec();
        bytes.extend([major, 0]);
        if major == 1 {
            bytes.extend((header.len() as u16).to_le_bytes());
        } else {
            bytes.extend((header.len() as u32).to_le_bytes());
        }
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    fn header(major: u8, dict: &str) -> anyhow::Result<Header> {
        read_header(&mut &npy(major, dict, &[])[..])
    }

    #[test]
    fn headers_of_every_version_read_dtype_shape_and_data_offset() {
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 384), }";
        for major in [1, 2, 3] {
            let read = header(major, dict).unwrap();
            assert_eq!(read.dtype, Dtype::F32);
            assert_eq!((read.rows, read.dimension), (1000, 384));
            assert!(
                read.data_offset.is_multiple_of(64),
                "numpy aligns data to 64 bytes"
            );
            assert_eq!(
                read.data_offset as usize,
                npy(major, dict, &[]).len(),
                "version {major}"
            );
        }
        let read = header(
            1,
            "{\"shape\": (3L, 2L), \"fortran_order\": False, \"descr\": \"<f8\"}",
        );
        let read = read.unwrap();
        assert_eq!((read.dtype, read.rows, read.dimension), (Dtype::F64, 3, 2));
    }

    #[test]
    fn headers_of_other_arrays_are_refused_naming_what_was_found() {
        let refused = |dict: &str| format!("{:#}", header(1, dict).unwrap_err());
        let message = refused("{'descr': '<i8', 'fortran_order': False, 'shape': (3, 2), }");
        assert!(
            message.contains("'<i8'") && message.contains("'<f4'"),
            "{message}"
        );
        let message = refused("{'descr': '>f4', 'fortran_order': False, 'shape': (3, 2), }");
        assert!(message.contains("'>f4'"), "{message}");
        let message = refused("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }");
        assert!(
            message.contains("(3,)") && message.contains("1-D"),
            "{message}"
        );
        let message = refused("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }");
        assert!(
            message.contains("3-D") && message.contains("2-D"),
            "{message}"
        );
        let message = refused("{'descr': '<f4', 'fortran_order': True, 'shape': (3, 2), }");
        assert!(message.contains("Fortran"), "{message}");
        let message = refused("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }");
        assert!(message.contains("[('a', '<f4')]"), "{message}");
        let message = refused("{'descr': '<f4', 'shape': (3, 2), }");
        assert!(message.contains("fortran_order"), "{message}");
        let message = refused("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2)");
        assert!(message.contains("not a dict literal"), "{message}");
        let message = format!(
            "{:#}",
            read_header(&mut &b"PK\x03\x04 zip file"[..]).unwrap_err()
        );
        assert!(message.contains("magic"), "{message}");
        let mut future = npy(1, "{}", &[]);
        future[6] = 4;
        let message = format!("{:#}", read_header(&mut &future[..]).unwrap_err());
        assert!(message.contains("version 4.0"), "{message}");
    }

    #[test]
    fn rows_are_read_in_order_converted_and_skipped_by_seeking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        let data: Vec<u8> = (0..6).flat_map(|i| f64::from(i).to_le_bytes()).collect();
        let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }";
        std::fs::write(&path, npy(1, dict, &data)).unwrap();
        let mut rows = Rows::open(&path).unwrap();
        assert_eq!(rows.next_row().unwrap(), Some((0, vec![0.0, 1.0])));
        rows.seek(2).unwrap();
        assert_eq!(rows.next_row().unwrap(), Some((2, vec![4.0, 5.0])));
        assert_eq!(rows.next_row().unwrap(), None);

        // A file shorter than its shape promises is refused before any row is read.
        std::fs::write(&path, npy(1, dict, &data[..40])).unwrap();
        let message = format!("{:#}", Rows::open(&path).err().unwrap());
        assert!(message.contains("truncated"), "{message}");
    }
}
