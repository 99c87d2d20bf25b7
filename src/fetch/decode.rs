//! Recognising compression by its magic bytes (never by the file name) and decompressing.
//!
//! gzip is read as a sequence of members (what `cat a.gz b.gz` and `pigz` produce), xz as a
//! sequence of streams, zstd as a sequence of frames. Anything else is taken as a raw image.

use std::io::{self, BufReader, Read};

/// How the fetched data is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "raw",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    /// Recognises the format from the first bytes of the data.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The longest magic number we look for.
const MAGIC_LEN: usize = 6;

/// Buffer between the network chunks and the decompressor.
const READ_BUFFER: usize = 256 << 10;

/// Reads the first bytes of `input`, recognises its format and returns a reader of the
/// uncompressed image.
pub fn open<R: Read + Send + 'static>(
    mut input: R,
) -> io::Result<(Compression, Box<dyn Read + Send>)> {
    let mut head = Vec::with_capacity(MAGIC_LEN);
    while head.len() < MAGIC_LEN {
        let mut byte = [0u8; MAGIC_LEN];
        let n = input.read(&mut byte[..MAGIC_LEN - head.len()])?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&byte[..n]);
    }
    let kind = Compression::detect(&head);
    let data = BufReader::with_capacity(READ_BUFFER, io::Cursor::new(head).chain(input));
    let reader: Box<dyn Read + Send> = match kind {
        Compression::None => Box::new(data),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(data)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(data)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(data)?),
    };
    Ok((kind, reader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn decoded(data: Vec<u8>) -> (Compression, Vec<u8>) {
        let (kind, mut reader) = open(io::Cursor::new(data)).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        (kind, out)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn formats_are_recognised_by_content() {
        let image: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(decoded(image.clone()), (Compression::None, image.clone()));
        assert_eq!(decoded(gzip(&image)), (Compression::Gzip, image.clone()));
        let xz = liblzma::encode_all(&image[..], 1).unwrap();
        assert_eq!(decoded(xz), (Compression::Xz, image.clone()));
        let zst = zstd::encode_all(&image[..], 1).unwrap();
        assert_eq!(decoded(zst), (Compression::Zstd, image.clone()));
        // shorter than any magic number
        assert_eq!(decoded(vec![1, 2]), (Compression::None, vec![1, 2]));
        assert_eq!(decoded(vec![]), (Compression::None, vec![]));
    }

    #[test]
    fn gzip_members_are_all_read() {
        let mut data = gzip(b"first member, ");
        data.extend(gzip(b"second member"));
        assert_eq!(decoded(data).1, b"first member, second member".to_vec());
    }
}
