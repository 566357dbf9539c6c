//! The body decoder (Content-Length and chunked) fed input cut at
//! arbitrary points: no panic, never past its cap, and the result (body,
//! bytes used, or the error kind) does not depend on the cuts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pubsubd::http::{BodyDecoder, BodyKind, HttpError};

/// Feeds `input` in pieces ending at `bounds`, keeping unconsumed bytes in
/// front of the next piece as the reactor does.
fn decode(
    kind: BodyKind,
    input: &[u8],
    bounds: &[usize],
    max: usize,
) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut decoder = BodyDecoder::new(kind);
    let mut body = Vec::new();
    let mut used = 0;
    for &end in bounds {
        while used < end {
            let p = decoder.feed(&input[used..end], &mut body, max)?;
            assert!(body.len() <= max, "decoder passed its cap");
            assert!(p.consumed <= end - used);
            used += p.consumed;
            if p.done {
                return Ok(Some((body, used)));
            }
            if p.consumed == 0 {
                break;
            }
        }
    }
    Ok(None)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (knobs, input) = data.split_at(4);
    let kind = match knobs[0] % 3 {
        0 => BodyKind::Chunked,
        1 => BodyKind::Length(u64::from(knobs[1])),
        _ => BodyKind::Chunked,
    };
    let max = usize::from(knobs[2]) * 4;
    // Cuts: a stride from the knobs, plus the end.
    let stride = usize::from(knobs[3] % 17) + 1;
    let mut bounds: Vec<usize> = (stride..input.len()).step_by(stride).collect();
    bounds.push(input.len());
    let whole = decode(kind, input, &[input.len()], max);
    let split = decode(kind, input, &bounds, max);
    let bytewise: Vec<usize> = (1..=input.len()).collect();
    let one_by_one = decode(kind, input, &bytewise, max);
    let show = |r: &Result<Option<(Vec<u8>, usize)>, HttpError>| match r {
        Ok(x) => Ok(x.clone()),
        Err(e) => Err(std::mem::discriminant(e)),
    };
    assert_eq!(show(&whole), show(&split), "stride {stride}");
    assert_eq!(show(&whole), show(&one_by_one));
});
