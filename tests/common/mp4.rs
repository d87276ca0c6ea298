//! Reading fMP4 boxes the chunk tests compare: decode times and the codec configuration.

use std::path::Path;

/// Every `tfdt` (baseMediaDecodeTime) in an fMP4 segment, in order.
pub fn tfdt(path: &Path) -> Vec<u64> {
    let b = std::fs::read(path).unwrap();
    b.windows(4)
        .enumerate()
        .filter(|(_, w)| w == b"tfdt")
        .map(|(i, _)| match b[i + 4] {
            1 => u64::from_be_bytes(b[i + 8..i + 16].try_into().unwrap()),
            _ => u64::from(u32::from_be_bytes(b[i + 8..i + 12].try_into().unwrap())),
        })
        .collect()
}

/// The `avcC` box (SPS and PPS) of an init segment.
pub fn avcc(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap();
    let at = b
        .windows(4)
        .position(|w| w == b"avcC")
        .expect("an avcC box");
    let size = u32::from_be_bytes(b[at - 4..at].try_into().unwrap()) as usize;
    b[at..at - 4 + size].to_vec()
}
