//! The WebSocket client-frame parser fed input cut at arbitrary points, as
//! the connection table feeds it from its buffer: no panic, never a frame
//! larger than `MAX_FRAME`, every close code one the server may send, and
//! the frames and verdict do not depend on the cuts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pubsubd::websocket::frames::{parse, Fail, Incoming, MAX_FRAME};

/// Feeds `input` in pieces ending at `bounds`, keeping unparsed bytes in
/// front of the next piece; what the parser said, in order.
fn run(input: &[u8], bounds: &[usize], deflate: bool) -> (Vec<Incoming>, Option<Fail>) {
    let (mut buf, mut frames) = (Vec::new(), Vec::new());
    let mut from = 0;
    for &end in bounds {
        buf.extend_from_slice(&input[from..end]);
        from = end;
        loop {
            match parse(&buf, deflate) {
                Ok(None) => break,
                Ok(Some((frame, used))) => {
                    assert!(used > 0 && used <= MAX_FRAME && used <= buf.len());
                    buf.drain(..used);
                    frames.push(frame);
                }
                Err(fail) => {
                    assert!(matches!(fail.code, 1002 | 1003 | 1007), "{fail:?}");
                    return (frames, Some(fail));
                }
            }
        }
        assert!(buf.len() < MAX_FRAME, "waiting on more than one frame's bytes");
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let deflate = knob & 0x80 != 0;
    let stride = usize::from(knob % 19) + 1;
    let mut bounds: Vec<usize> = (stride..input.len()).step_by(stride).collect();
    bounds.push(input.len());
    let whole = run(input, &[input.len()], deflate);
    assert_eq!(whole, run(input, &bounds, deflate), "stride {stride}");
    let bytewise: Vec<usize> = (1..=input.len()).collect();
    assert_eq!(whole, run(input, &bytewise, deflate));
});
