//! Content decoding of response bodies (`gzip`, `deflate`, `br`), so that the stored body is the
//! readable one and both sizes are known: as received and decoded.
//!
//! Decoding streams alongside the read: only the first bytes are kept (for storage) and at
//! most [`DECODED_CAP`] are produced, so a small body that inflates enormously costs bounded
//! memory and time. Other encodings (`zstd`, `compress`) are left as received.

use std::io::Write;

use brotli_decompressor::DecompressorWriter;
use flate2::write::{GzDecoder, ZlibDecoder};

/// Most decoded bytes produced from one body; decoding stops there.
pub const DECODED_CAP: u64 = 64 * 1024 * 1024;
/// Size of the brotli decoder's output buffer.
const BROTLI_BUFFER: usize = 16 * 1024;

/// Where decoded bytes go: counted, the first `keep` kept, refused past [`DECODED_CAP`].
#[derive(Debug, Default)]
pub(super) struct Decoded {
    /// Decoded bytes produced.
    pub size: u64,
    /// The first decoded bytes, up to `keep`.
    pub kept: Vec<u8>,
    keep: usize,
    /// True once the cap stopped decoding.
    pub capped: bool,
}

impl Write for Decoded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = DECODED_CAP - self.size;
        if room == 0 {
            self.capped = true;
            return Err(std::io::Error::other("decoded size cap reached"));
        }
        let take = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let keep = take.min(self.keep.saturating_sub(self.kept.len()));
        self.kept.extend_from_slice(&buf[..keep]);
        self.size += take as u64;
        self.capped = take < buf.len();
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A body's content decoder, chosen by its `Content-Encoding`.
pub(super) enum BodyDecoder {
    Gzip(GzDecoder<Decoded>),
    /// HTTP's `deflate` is the zlib format (RFC 9110).
    Deflate(ZlibDecoder<Decoded>),
    Brotli(Box<DecompressorWriter<Decoded>>),
}

impl BodyDecoder {
    /// A decoder for `encoding`, keeping the first `keep` decoded bytes; `None` for identity
    /// and for encodings that are not decoded.
    pub fn for_encoding(encoding: &str, keep: usize) -> Option<Self> {
        let sink = Decoded {
            keep,
            ..Decoded::default()
        };
        match encoding.trim().to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Some(Self::Gzip(GzDecoder::new(sink))),
            "deflate" => Some(Self::Deflate(ZlibDecoder::new(sink))),
            "br" => Some(Self::Brotli(Box::new(DecompressorWriter::new(
                sink,
                BROTLI_BUFFER,
            )))),
            _ => None,
        }
    }

    /// Decodes the next received bytes. Fails when they are not valid for the encoding; past
    /// the cap, further bytes are ignored.
    pub fn write(&mut self, data: &[u8]) -> Result<(), String> {
        if self.decoded().capped {
            return Ok(());
        }
        let outcome = match self {
            Self::Gzip(d) => d.write_all(data),
            Self::Deflate(d) => d.write_all(data),
            Self::Brotli(d) => d.write_all(data),
        };
        self.check(outcome)
    }

    /// Ends decoding of a body read to its end: fails when the encoded stream is incomplete.
    pub fn finish(&mut self) -> Result<(), String> {
        if self.decoded().capped {
            return Ok(());
        }
        let outcome = match self {
            Self::Gzip(d) => d.try_finish(),
            Self::Deflate(d) => d.try_finish(),
            Self::Brotli(d) => d.close(),
        };
        self.check(outcome)
    }

    /// Takes the kept decoded bytes, once decoding is over.
    pub fn take_kept(&mut self) -> Vec<u8> {
        let sink = match self {
            Self::Gzip(d) => d.get_mut(),
            Self::Deflate(d) => d.get_mut(),
            Self::Brotli(d) => d.get_mut(),
        };
        std::mem::take(&mut sink.kept)
    }

    /// What was decoded so far.
    pub fn decoded(&self) -> &Decoded {
        match self {
            Self::Gzip(d) => d.get_ref(),
            Self::Deflate(d) => d.get_ref(),
            Self::Brotli(d) => d.get_ref(),
        }
    }

    fn check(&self, outcome: std::io::Result<()>) -> Result<(), String> {
        match outcome {
            Err(_) if self.decoded().capped => Ok(()),
            Err(e) => Err(e.to_string()),
            Ok(()) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_and_deflate_decode_in_pieces() {
        let text = b"hello hello hello hello".repeat(100);
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(&text).unwrap();
        let mut br = Vec::new();
        brotli::BrotliCompress(&mut &text[..], &mut br, &Default::default()).unwrap();
        for (encoding, wire) in [
            ("gzip", gzip(&text)),
            ("Deflate", zlib.finish().unwrap()),
            ("br", br),
        ] {
            let mut d = BodyDecoder::for_encoding(encoding, 10).expect(encoding);
            for piece in wire.chunks(7) {
                d.write(piece).unwrap();
            }
            d.finish().unwrap();
            assert_eq!(d.decoded().size, text.len() as u64, "{encoding}");
            assert_eq!(d.decoded().kept, b"hello hell", "{encoding}");
        }
        assert!(BodyDecoder::for_encoding("zstd", 10).is_none());
        assert!(BodyDecoder::for_encoding("identity", 10).is_none());
    }

    #[test]
    fn corrupt_and_cut_streams_fail() {
        let mut d = BodyDecoder::for_encoding("gzip", 0).unwrap();
        assert!(d.write(b"this is not gzip at all").is_err());

        let wire = gzip(b"some text to compress");
        let mut d = BodyDecoder::for_encoding("gzip", 0).unwrap();
        d.write(&wire[..wire.len() - 6]).unwrap();
        assert!(d.finish().is_err(), "a cut stream is incomplete");
    }

    #[test]
    fn decoding_stops_at_the_cap() {
        // 1 MiB of zeros compresses to about 1 KiB; feed it until past the cap.
        let wire = gzip(&vec![0u8; 1024 * 1024]);
        let mut d = BodyDecoder::for_encoding("gzip", 0).unwrap();
        let mut stream = GzEncoder::new(Vec::new(), Compression::default());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..(DECODED_CAP / zeros.len() as u64 + 2) {
            stream.write_all(&zeros).unwrap();
            stream.flush().unwrap();
            let out = std::mem::take(stream.get_mut());
            d.write(&out).unwrap();
        }
        assert!(d.decoded().capped);
        assert_eq!(d.decoded().size, DECODED_CAP);
        assert!(wire.len() < 16 * 1024);
    }
}
