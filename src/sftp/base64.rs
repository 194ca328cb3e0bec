//! Standard base64 as known_hosts lines (padded) and SHA256 fingerprints (unpadded) use it.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, STANDARD_PAD_INDIFFERENT};

/// Encodes `data`; with `pad`, the output is padded with `=` to a multiple of 4.
pub(crate) fn encode(data: &[u8], pad: bool) -> String {
    if pad {
        STANDARD.encode(data)
    } else {
        STANDARD_NO_PAD.encode(data)
    }
}

/// Decodes padded or unpadded base64; `None` if `text` is not base64.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    STANDARD_PAD_INDIFFERENT.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_and_unpadded() {
        assert_eq!(encode(b"fo", true), "Zm8=");
        assert_eq!(encode(b"fo", false), "Zm8");
        assert_eq!(decode("Zm8=").unwrap(), b"fo");
        assert_eq!(decode("Zm8").unwrap(), b"fo");
        assert!(decode("Zm9v!").is_none());
    }
}
