//! The request head parser fed arbitrarily split input: no panic, and the
//! head found in the whole buffer is the one found once enough of it has
//! arrived (a prefix is "incomplete" or the same answer, never another).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pubsubd::http::parse_head;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, input)) = data.split_first() else {
        return;
    };
    let max_headers = usize::from(knobs % 70) + 1;
    let whole = parse_head(input, max_headers);
    if let Ok(Some((_, used))) = &whole {
        assert!(*used <= input.len());
    }
    // Every prefix, like a reactor reading one byte at a time (bounded so
    // large inputs stay fast: the cuts below 512 cover every head state).
    for end in 0..input.len().min(512) {
        match parse_head(&input[..end], max_headers) {
            Ok(None) => {}
            Ok(Some((head, used))) => {
                // Complete early: the whole buffer must say the same.
                assert!(used <= end);
                match &whole {
                    Ok(Some((h, u))) => {
                        assert_eq!(&head, h);
                        assert_eq!(used, *u);
                    }
                    other => panic!("prefix complete, whole {other:?}"),
                }
                return;
            }
            Err(e) => {
                assert!(whole.is_err(), "prefix error {e:?}, whole {whole:?}");
                return;
            }
        }
    }
});
